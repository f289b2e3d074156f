"""run_stages.reason: why a stage failed (a hand-off that failed verification records its verdict)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 19:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('run_stages', sa.Column('reason', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('run_stages', schema=None) as batch_op:
        batch_op.drop_column('reason')
