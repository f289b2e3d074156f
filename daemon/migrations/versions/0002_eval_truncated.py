"""eval_results.truncated: the reply stopped at max_tokens

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 15:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('eval_results', schema=None) as batch_op:
        batch_op.add_column(sa.Column('truncated', sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('eval_results', schema=None) as batch_op:
        batch_op.drop_column('truncated')
