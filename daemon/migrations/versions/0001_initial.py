"""initial registry schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-20 22:47:03.334815
"""

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('models',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('base_path', sa.Text(), nullable=False),
    sa.Column('base_sha256', sa.String(length=64), nullable=False),
    sa.Column('adapter_path', sa.Text(), nullable=True),
    sa.Column('adapter_sha256', sa.String(length=64), nullable=True),
    sa.Column('parent_base_id', sa.Integer(), nullable=True),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.Column('mlx_version', sa.String(length=32), nullable=True),
    sa.Column('mlx_lm_version', sa.String(length=32), nullable=True),
    sa.Column('release_path', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['parent_base_id'], ['models.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_models_base_sha256'), ['base_sha256'], unique=False)

    op.create_table('rehearsals',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ok', sa.Boolean(), nullable=False),
    sa.Column('report', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('trigger', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('night_key', sa.String(length=64), nullable=True),
    sa.Column('profile', sa.String(length=64), nullable=True),
    sa.Column('config_path', sa.Text(), nullable=True),
    sa.Column('config_snapshot', sa.Text(), nullable=False),
    sa.Column('dataset_sha256', sa.String(length=64), nullable=True),
    sa.Column('dataset_examples', sa.Integer(), nullable=True),
    sa.Column('run_dir', sa.Text(), nullable=True),
    sa.Column('pid', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('failure_reason', sa.Text(), nullable=True),
    sa.Column('log_path', sa.Text(), nullable=True),
    sa.Column('report_path', sa.Text(), nullable=True),
    sa.Column('champion_model_id', sa.Integer(), nullable=True),
    sa.Column('challenger_model_id', sa.Integer(), nullable=True),
    sa.Column('decision', sa.Text(), nullable=True),
    sa.Column('progress', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['challenger_model_id'], ['models.id'], ),
    sa.ForeignKeyConstraint(['champion_model_id'], ['models.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('night_key')
    )
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_runs_status'), ['status'], unique=False)

    op.create_table('eval_sets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('reused_from', sa.Integer(), nullable=True),
    sa.Column('held_out_loss', sa.Float(), nullable=True),
    sa.Column('duration_s', sa.Float(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], ),
    sa.ForeignKeyConstraint(['reused_from'], ['eval_sets.id'], ),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('eval_sets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_eval_sets_fingerprint'), ['fingerprint'], unique=False)
        batch_op.create_index(batch_op.f('ix_eval_sets_model_id'), ['model_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_eval_sets_run_id'), ['run_id'], unique=False)

    op.create_table('preflight_checks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.Column('rehearsal_id', sa.Integer(), nullable=True),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('level', sa.String(length=8), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('duration_s', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['rehearsal_id'], ['rehearsals.id'], ),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('preflight_checks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_preflight_checks_rehearsal_id'), ['rehearsal_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_preflight_checks_run_id'), ['run_id'], unique=False)

    op.create_table('promotions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.Column('from_model_id', sa.Integer(), nullable=True),
    sa.Column('to_model_id', sa.Integer(), nullable=False),
    sa.Column('release_path', sa.Text(), nullable=False),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('decided_by', sa.String(length=128), nullable=False),
    sa.ForeignKeyConstraint(['from_model_id'], ['models.id'], ),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ),
    sa.ForeignKeyConstraint(['to_model_id'], ['models.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('run_stages',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('stage', sa.String(length=32), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('duration_s', sa.Float(), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('run_stages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_run_stages_run_id'), ['run_id'], unique=False)

    op.create_table('train_metrics',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('iteration', sa.Integer(), nullable=False),
    sa.Column('train_loss', sa.Float(), nullable=True),
    sa.Column('val_loss', sa.Float(), nullable=True),
    sa.Column('learning_rate', sa.Float(), nullable=True),
    sa.Column('tokens_per_s', sa.Float(), nullable=True),
    sa.Column('trained_tokens', sa.Integer(), nullable=True),
    sa.Column('peak_memory_bytes', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('train_metrics', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_train_metrics_run_id'), ['run_id'], unique=False)

    op.create_table('eval_results',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('eval_set_id', sa.Integer(), nullable=False),
    sa.Column('category', sa.String(length=128), nullable=False),
    sa.Column('item_id', sa.String(length=256), nullable=False),
    sa.Column('sample', sa.Integer(), nullable=False),
    sa.Column('score', sa.Float(), nullable=False),
    sa.Column('empty', sa.Boolean(), nullable=False),
    sa.Column('parsed', sa.Boolean(), nullable=False),
    sa.Column('prompt', sa.Text(), nullable=True),
    sa.Column('reply', sa.Text(), nullable=True),
    sa.Column('gold', sa.Text(), nullable=True),
    sa.Column('extracted', sa.Text(), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['eval_set_id'], ['eval_sets.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('eval_results', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_eval_results_eval_set_id'), ['eval_set_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('eval_results', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_eval_results_eval_set_id'))

    op.drop_table('eval_results')
    with op.batch_alter_table('train_metrics', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_train_metrics_run_id'))

    op.drop_table('train_metrics')
    with op.batch_alter_table('run_stages', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_run_stages_run_id'))

    op.drop_table('run_stages')
    op.drop_table('promotions')
    with op.batch_alter_table('preflight_checks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_preflight_checks_run_id'))
        batch_op.drop_index(batch_op.f('ix_preflight_checks_rehearsal_id'))

    op.drop_table('preflight_checks')
    with op.batch_alter_table('eval_sets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_eval_sets_run_id'))
        batch_op.drop_index(batch_op.f('ix_eval_sets_model_id'))
        batch_op.drop_index(batch_op.f('ix_eval_sets_fingerprint'))

    op.drop_table('eval_sets')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_runs_status'))

    op.drop_table('runs')
    op.drop_table('rehearsals')
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_models_base_sha256'))

    op.drop_table('models')
