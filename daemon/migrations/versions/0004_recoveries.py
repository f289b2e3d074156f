"""recoveries: what the start-up reconcile step repaired

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 15:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('recoveries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('recoveries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_recoveries_run_id'), ['run_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('recoveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_recoveries_run_id'))
    op.drop_table('recoveries')
