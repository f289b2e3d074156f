"""runs: the training outcome (chosen checkpoint, early stop, resume)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 15:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('chosen_iteration', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('chosen_val_loss', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('train_stop_reason', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('resumed_from_run_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('resumed_iterations', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('resumed_iterations')
        batch_op.drop_column('resumed_from_run_id')
        batch_op.drop_column('train_stop_reason')
        batch_op.drop_column('chosen_val_loss')
        batch_op.drop_column('chosen_iteration')
