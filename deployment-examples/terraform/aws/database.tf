# The schedulers' shared state: an RDS PostgreSQL 15 instance, made when scheduler_count > 1.
#
# What it holds: the queue, the operations (running, and finished ones for a while), worker
# leases and results (`schedulers.main.state.postgres` in each host's Apus config). Not the
# cache: CAS blobs and action results live in the bucket. So losing the database loses the
# builds in flight (their clients see errors and retry), never cached data.
#
# Why only with two or more schedulers: one scheduler keeps its state in memory, and a
# database would add about 25-50 USD a month and a dependency without letting anything
# survive that the single host does not already lose.
#
# - Multi-AZ by default (database_multi_az): a standby in another zone takes over in about
#   60-120 s when the primary or its zone fails; Execute is UNAVAILABLE meanwhile and the
#   hosts' /readyz answers 503. Single-AZ halves the price for a test setup.
# - Private: its own subnet group in the private subnets, not publicly accessible, and a
#   security group admitting 5432 from the scheduler hosts' group only.
# - TLS required by the server (rds.force_ssl = 1) and verified by Apus (sslmode=verify-full
#   against the RDS CA bundle, fetched at boot from AWS's truststore over HTTPS).
# - Password: random, in an SSM SecureString (KMS key of the tree) that only the scheduler
#   role reads, at boot, with the same aws-helper get-parameter as its TLS key. Not RDS's
#   managed secret (manage_master_user_password): Secrets Manager rotates that one every 7
#   days by default, and Apus reads its password once at start, so a rotation would lock the
#   schedulers out at their next reconnection. Apus connects as the master user: a narrower
#   role would need SQL run inside the VPC, which Terraform here cannot reach.
# - Destroy policy: database_deletion_protection (true) makes `terraform destroy`, and any
#   change that would replace the instance, stop at it, since a replacement wipes every
#   build in flight; set it to false and apply before destroying. No final snapshot by
#   default (database_final_snapshot): the state is transient and nothing in it is worth
#   restoring into a new deployment; automated backups are kept database_backup_retention_days.

locals {
  shared_state     = var.scheduler_count > 1
  database_name    = "apus"
  database_user    = "apus"
  database_id      = "${var.name}-scheduler-state"
  rds_ca_bundle    = "https://truststore.pki.rds.amazonaws.com/${var.region}/${var.region}-bundle.pem"
  database_log_dir = "/aws/rds/instance/${local.database_id}"
}

resource "random_password" "database" {
  count   = local.shared_state ? 1 : 0
  length  = 40
  special = false # it goes into an environment file and never needs quoting
}

resource "aws_ssm_parameter" "database_password" {
  count  = local.shared_state ? 1 : 0
  name   = "/${var.name}/scheduler/database-password"
  type   = "SecureString"
  key_id = local.kms_key_arn
  value  = random_password.database[0].result
}

resource "aws_db_subnet_group" "state" {
  count       = local.shared_state ? 1 : 0
  name_prefix = "${var.name}-state-"
  description = "Apus scheduler state: the private subnets"
  subnet_ids  = aws_subnet.private[*].id
}

resource "aws_db_parameter_group" "state" {
  count       = local.shared_state ? 1 : 0
  name_prefix = "${var.name}-state-"
  family      = "postgres15"
  description = "Apus scheduler state: TLS required, slow statements and connections logged"

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }

  # Queries slower than 1 s and every connection attempt go to the postgresql log export.
  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }

  parameter {
    name  = "log_connections"
    value = "1"
  }

  lifecycle {
    create_before_destroy = true
  }
}

# RDS creates its export log groups itself, without retention or encryption; made here first
# so they get both.
resource "aws_cloudwatch_log_group" "database" {
  for_each          = local.shared_state ? toset(["postgresql", "upgrade"]) : toset([])
  name              = "${local.database_log_dir}/${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = local.kms_key_arn
}

resource "random_id" "final_snapshot" {
  count       = local.shared_state ? 1 : 0
  byte_length = 4
}

resource "aws_db_instance" "state" {
  #checkov:skip=CKV_AWS_161:IAM database authentication needs a fresh token every 15 minutes; Apus authenticates with a password (SSM SecureString, TLS verified).
  #checkov:skip=CKV_AWS_118:Enhanced monitoring is off: the standard CloudWatch RDS metrics and Performance Insights cover a queue database; set monitoring_interval and a role to add it.
  count          = local.shared_state ? 1 : 0
  identifier     = local.database_id
  engine         = "postgres"
  engine_version = "15"
  instance_class = var.database_instance_class
  db_name        = local.database_name
  username       = local.database_user
  password       = random_password.database[0].result
  port           = 5432

  allocated_storage     = var.database_storage_gb
  max_allocated_storage = var.database_storage_gb * 5
  storage_type          = "gp3"
  storage_encrypted     = true
  kms_key_id            = local.kms_key_arn

  multi_az               = var.database_multi_az
  db_subnet_group_name   = aws_db_subnet_group.state[0].name
  vpc_security_group_ids = [aws_security_group.database[0].id]
  publicly_accessible    = false
  parameter_group_name   = aws_db_parameter_group.state[0].name
  ca_cert_identifier     = "rds-ca-rsa2048-g1"

  auto_minor_version_upgrade  = true
  allow_major_version_upgrade = false
  backup_retention_period     = var.database_backup_retention_days
  copy_tags_to_snapshot       = true
  deletion_protection         = var.database_deletion_protection
  skip_final_snapshot         = !var.database_final_snapshot
  final_snapshot_identifier   = "${local.database_id}-final-${random_id.final_snapshot[0].hex}"

  performance_insights_enabled          = true
  performance_insights_kms_key_id       = local.kms_key_arn
  performance_insights_retention_period = 7
  enabled_cloudwatch_logs_exports       = ["postgresql", "upgrade"]

  tags = { Name = local.database_id }

  depends_on = [aws_cloudwatch_log_group.database]
}
