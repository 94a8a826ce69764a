# Runs, steps, artifacts, audits and approvals move here from campaigns (campaigns/migrations/
# 0004_runs_to_orchestration.py): state only, the tables (campaigns_*) and their rows stay.

import campaigns.ids
import campaigns.validation
import django.core.validators
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('campaigns', '0004_runs_to_orchestration'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='OrchestrationRun',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('public_id', models.CharField(default=campaigns.ids.run_id, editable=False, max_length=32, unique=True)),
                        ('kind', models.CharField(choices=[('generation', 'Generation'), ('revision', 'Revision')], default='generation', max_length=16)),
                        ('state', models.CharField(choices=[('pending', 'Pending'), ('planning', 'Planning'), ('generating', 'Generating'), ('awaiting_approval', 'Awaiting Approval'), ('auditing', 'Auditing'), ('completed', 'Completed'), ('failed', 'Failed'), ('cancelled', 'Cancelled')], db_index=True, default='pending', max_length=32)),
                        ('plan', models.JSONField(blank=True, default=list)),
                        ('settings', models.JSONField(blank=True, default=dict, validators=[campaigns.validation.validate_settings])),
                        ('attempts', models.PositiveIntegerField(default=0)),
                        ('error', models.TextField(blank=True)),
                        ('prompt_tokens', models.PositiveBigIntegerField(default=0)),
                        ('completion_tokens', models.PositiveBigIntegerField(default=0)),
                        ('cost', models.DecimalField(decimal_places=6, default=0, max_digits=12)),
                        ('progress', models.PositiveSmallIntegerField(default=0)),
                        ('heartbeat_at', models.DateTimeField(blank=True, null=True)),
                        ('cancel_requested', models.BooleanField(default=False)),
                        ('cancel_requested_by', models.CharField(blank=True, max_length=150)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('started_at', models.DateTimeField(blank=True, null=True)),
                        ('finished_at', models.DateTimeField(blank=True, null=True)),
                        ('updated_at', models.DateTimeField(auto_now=True)),
                        ('campaign', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='runs', to='campaigns.campaign')),
                        ('created_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'db_table': 'campaigns_orchestrationrun',
                        'ordering': ['-created_at', '-id'],
                    },
                ),
                migrations.CreateModel(
                    name='ComplianceAudit',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('score', models.PositiveSmallIntegerField(validators=[django.core.validators.MinValueValidator(0), django.core.validators.MaxValueValidator(100)])),
                        ('is_compliant', models.BooleanField()),
                        ('issues', models.JSONField(blank=True, default=list)),
                        ('feedback', models.TextField(blank=True)),
                        ('audited_at', models.DateTimeField(auto_now_add=True)),
                        ('campaign', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='audits', to='campaigns.campaign')),
                        ('run', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='audit', to='orchestration.orchestrationrun')),
                    ],
                    options={
                        'db_table': 'campaigns_complianceaudit',
                        'ordering': ['-audited_at', '-id'],
                    },
                ),
                migrations.CreateModel(
                    name='Artifact',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('public_id', models.CharField(default=campaigns.ids.artifact_id, editable=False, max_length=32, unique=True)),
                        ('type', models.CharField(choices=[('Copy', 'Copy'), ('ShortCopy', 'Short copy'), ('Visual', 'Visual')], max_length=16)),
                        ('content', models.TextField()),
                        ('metadata', models.JSONField(blank=True, default=dict)),
                        ('agent_name', models.CharField(max_length=64)),
                        ('version', models.PositiveIntegerField(default=1)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('campaign', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='artifacts', to='campaigns.campaign')),
                        ('run', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='artifacts', to='orchestration.orchestrationrun')),
                    ],
                    options={
                        'db_table': 'campaigns_artifact',
                        'ordering': ['campaign', 'type', '-version'],
                    },
                ),
                migrations.CreateModel(
                    name='Approval',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('public_id', models.CharField(default=campaigns.ids.approval_id, editable=False, max_length=32, unique=True)),
                        ('step', models.CharField(max_length=32)),
                        ('reason', models.CharField(blank=True, max_length=500)),
                        ('state', models.CharField(choices=[('pending', 'Pending'), ('approved', 'Approved'), ('rejected', 'Rejected'), ('cancelled', 'Cancelled')], default='pending', max_length=16)),
                        ('comment', models.TextField(blank=True)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('decided_at', models.DateTimeField(blank=True, null=True)),
                        ('decided_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                        ('run', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='approvals', to='orchestration.orchestrationrun')),
                    ],
                    options={
                        'db_table': 'campaigns_approval',
                        'ordering': ['-created_at', '-id'],
                    },
                ),
                migrations.CreateModel(
                    name='RunStep',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('name', models.CharField(max_length=32)),
                        ('agent', models.CharField(max_length=64)),
                        ('position', models.PositiveSmallIntegerField()),
                        ('status', models.CharField(choices=[('pending', 'Pending'), ('queued', 'Queued'), ('running', 'Running'), ('completed', 'Completed'), ('failed', 'Failed'), ('cancelled', 'Cancelled')], default='pending', max_length=16)),
                        ('attempt', models.PositiveIntegerField(default=0)),
                        ('instructions', models.TextField(blank=True)),
                        ('queued_at', models.DateTimeField(blank=True, null=True)),
                        ('lease_owner', models.CharField(blank=True, max_length=200)),
                        ('lease_expires_at', models.DateTimeField(blank=True, null=True)),
                        ('started_at', models.DateTimeField(blank=True, null=True)),
                        ('finished_at', models.DateTimeField(blank=True, null=True)),
                        ('duration_ms', models.PositiveIntegerField(blank=True, null=True)),
                        ('checkpoint_id', models.CharField(blank=True, max_length=32)),
                        ('error', models.TextField(blank=True)),
                        ('run', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='steps', to='orchestration.orchestrationrun')),
                    ],
                    options={
                        'db_table': 'campaigns_runstep',
                        'ordering': ['run_id', 'position'],
                    },
                ),
                migrations.AddIndex(
                    model_name='orchestrationrun',
                    index=models.Index(fields=['campaign', '-created_at'], name='campaigns_o_campaig_e6bdd8_idx'),
                ),
                migrations.AddConstraint(
                    model_name='orchestrationrun',
                    constraint=models.UniqueConstraint(condition=models.Q(('state__in', ('completed', 'failed', 'cancelled')), _negated=True), fields=('campaign',), name='one_active_run_per_campaign', violation_error_message='This campaign already has an active run.'),
                ),
                migrations.AddConstraint(
                    model_name='complianceaudit',
                    constraint=models.CheckConstraint(condition=models.Q(('score__gte', 0), ('score__lte', 100)), name='audit_score_0_100'),
                ),
                migrations.AddConstraint(
                    model_name='artifact',
                    constraint=models.UniqueConstraint(fields=('campaign', 'type', 'version'), name='one_artifact_per_version'),
                ),
                migrations.AddConstraint(
                    model_name='artifact',
                    constraint=models.UniqueConstraint(fields=('run', 'type', 'version'), name='one_artifact_per_run_step'),
                ),
                migrations.AddConstraint(
                    model_name='approval',
                    constraint=models.UniqueConstraint(condition=models.Q(('state', 'pending')), fields=('run',), name='one_pending_approval_per_run'),
                ),
                migrations.AddIndex(
                    model_name='runstep',
                    index=models.Index(fields=['status', 'lease_expires_at'], name='campaigns_r_status_c0eabe_idx'),
                ),
                migrations.AddIndex(
                    model_name='runstep',
                    index=models.Index(fields=['status', 'queued_at'], name='campaigns_r_status_9f03c0_idx'),
                ),
                migrations.AddConstraint(
                    model_name='runstep',
                    constraint=models.UniqueConstraint(fields=('run', 'name'), name='one_step_per_name'),
                ),
            ],
            database_operations=[],
        ),
    ]
