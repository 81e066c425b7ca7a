output "remote_executor" {
  description = "The Bazel flag value: --remote_executor=<this> (also serves the cache)."
  value       = "grpcs://${local.scheduler_name}:443"
}

output "remote_cache" {
  description = "The cache-only Bazel flag value: --remote_cache=<this>."
  value       = "grpcs://${local.cas_name}:443"
}

output "cache_bucket" {
  description = "Name of the S3 bucket holding the CAS (cas/) and action cache (ac/)."
  value       = aws_s3_bucket.cache.id
}

output "nlb_dns_name" {
  description = "DNS name of the public Network Load Balancer that the cas and scheduler records alias."
  value       = aws_lb.front.dns_name
}

output "scheduler_instance_ids" {
  description = "Instance IDs of the scheduler hosts: aws ssm start-session --target <one of these>."
  value       = aws_instance.scheduler[*].id
}

output "worker_endpoint" {
  description = "The address workers dial (internal NLB, TLS to Apus with the internal CA): grpcs://<this>, server name scheduler.<name>.internal."
  value       = "${aws_lb.workers.dns_name}:50051"
}

output "database_endpoint" {
  description = "host:port of the schedulers' RDS PostgreSQL (user apus, database apus); empty with one scheduler."
  value       = local.shared_state ? aws_db_instance.state[0].endpoint : ""
}

output "database_password_parameter" {
  description = "SSM SecureString parameter holding the database password (aws ssm get-parameter --with-decryption --name <this>); empty with one scheduler."
  value       = local.shared_state ? aws_ssm_parameter.database_password[0].name : ""
}

output "worker_autoscaling_group" {
  description = "Name of the worker Auto Scaling Group (also the AutoScalingGroupName dimension of Apus/DesiredWorkers)."
  value       = aws_autoscaling_group.workers.name
}

output "client_token_parameters" {
  description = "SSM SecureString parameter per client principal holding its bearer token (aws ssm get-parameter --with-decryption --name <this>)."
  value       = { for p, param in aws_ssm_parameter.client_token : p => param.name }
}

output "internal_ca_certificate" {
  description = "PEM of the internal CA that signs Apus's own TLS certificate (the NLB-to-Apus and worker-to-Apus hop)."
  value       = tls_self_signed_cert.ca.cert_pem
}

output "kms_key_arn" {
  description = "ARN of the KMS key encrypting the bucket, the SSM parameters, the volumes, the database and the log groups."
  value       = local.kms_key_arn
}
