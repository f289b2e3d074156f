"""runs: how training ended (the stop's detail, iterations done of planned, the deadline and
the stop time it set, the processes that trained)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 21:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

_COLUMNS = (
    ('train_stop_detail', sa.Text()),
    ('train_iterations_done', sa.Integer()),
    ('train_iterations_total', sa.Integer()),
    ('train_deadline', sa.DateTime(timezone=True)),
    ('train_stop_at', sa.DateTime(timezone=True)),
    ('train_world_size', sa.Integer()),
    ('train_backend', sa.String(length=16)),
)


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        for name, type_ in _COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        for name, _ in reversed(_COLUMNS):
            batch_op.drop_column(name)
