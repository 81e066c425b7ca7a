# The scheduler hosts: scheduler_count (2) identical instances, each one Apus process with
# the cas, action-cache and scheduler roles (fast_slow store: memory and the local disk in
# front of the S3 bucket), spread over the private subnets (one per availability zone),
# behind an NLB that terminates the public TLS with an ACM certificate (ALPN HTTP2Only, so
# gRPC clients get h2). With two or more, the schedulers share their queue and operations in
# PostgreSQL (database.tf): any host takes Execute and answers WaitExecution for any
# operation, and when one dies the others dispatch its queue and requeue what its workers
# ran once their leases run out. Each host's CAS reads and writes the same bucket
# (slow_write sync), so a blob uploaded through one host is found through the other.
#
# Why TLS at the NLB and not at Apus: ACM certificates renew themselves and cannot be
# exported to an instance, so the public certificate never touches a disk. What it costs:
# the NLB ends the client's TLS, so Apus cannot see client certificates (use the bearer
# tokens in secrets.tf, not mTLS) and sees the NLB's address, not the client's.
#
# NLB to Apus: by default the NLB forwards the decrypted HTTP/2 stream to a plaintext (h2c)
# listener on 50052 that only the NLB's security group reaches; nlb_target_tls = true
# re-encrypts to 50051 instead, but Apus closes TLS connections that do not negotiate ALPN
# h2, and whether the NLB offers ALPN to TLS targets is not verified here: check it before
# turning it on.
#
# Workers reach the hosts through a second, internal NLB (TCP passthrough to Apus's TLS
# listener on 50051, internal CA end to end): one address for scheduler and CAS, and a
# broken stream reconnects to a live host. Both NLBs check each host's /readyz on the admin
# port (9091), which answers 503 while the host drains or cannot reach PostgreSQL, so new
# connections go to the hosts that can serve them.

data "aws_ami" "debian" {
  count       = var.ami_id == "" ? 1 : 0
  most_recent = true
  owners      = ["136693071363"] # Debian's official AWS account
  filter {
    name   = "name"
    values = ["debian-12-${var.instance_architecture == "arm64" ? "arm64" : "amd64"}-*"]
  }
  filter {
    name   = "architecture"
    values = [var.instance_architecture]
  }
}

locals {
  ami_id = var.ami_id != "" ? var.ami_id : data.aws_ami.debian[0].id

  publisher_files = {
    script  = file("${path.module}/publisher/apus-desired-workers.py")
    service = file("${path.module}/publisher/apus-desired-workers.service")
    timer   = file("${path.module}/publisher/apus-desired-workers.timer")
  }

  scheduler_user_data = templatefile("${path.module}/cloud-init/scheduler.yaml.tftpl", {
    release_url       = var.apus_release_url
    release_sha256    = var.apus_release_sha256
    region            = var.region
    bucket            = aws_s3_bucket.cache.id
    disk_tier_bytes   = floor(var.scheduler_disk_gb * 0.8 * 1024 * 1024 * 1024)
    ca_cert_pem       = tls_self_signed_cert.ca.cert_pem
    server_cert_pem   = tls_locally_signed_cert.scheduler.cert_pem
    tls_key_parameter = aws_ssm_parameter.scheduler_tls_key.name
    token_file        = local.token_file
    auth_instances    = jsonencode({ "*" = merge(var.client_principals, { worker = ["read", "write", "write_ac"] }) })
    aws_helper        = file("${path.module}/cloud-init/apus-aws-helper.py")
    publisher_script  = local.publisher_files.script
    publisher_service = local.publisher_files.service
    publisher_timer   = local.publisher_files.timer
    # Shared state (database.tf) with two or more schedulers, memory with one. TLS verified
    # against the RDS CA (verify-full); the password is expanded from the environment.
    scheduler_settings = jsonencode(local.shared_state ? {
      state = { postgres = {
        url = join("", [
          "postgres://${local.database_user}@${aws_db_instance.state[0].address}:${aws_db_instance.state[0].port}/",
          "${local.database_name}?sslmode=verify-full&sslrootcert=/etc/apus/tls/rds-ca.pem",
        ])
        password = "$${APUS_PG_PASSWORD}"
      } }
    } : {})
    database_password_parameter = local.shared_state ? aws_ssm_parameter.database_password[0].name : ""
    rds_ca_bundle_url           = local.rds_ca_bundle
    worker_slots                = var.worker_slots
    nlb_listener = var.nlb_target_tls ? "" : jsonencode({
      listen    = "0.0.0.0:50052"
      instances = { "" = { cas = "cas", action_cache = "ac", execution = "main" } }
    })
    autoscaling_group      = local.worker_group_name
    scale_in_delay_seconds = var.scale_in_delay_seconds
  })
}

resource "aws_instance" "scheduler" {
  count                  = var.scheduler_count
  ami                    = local.ami_id
  instance_type          = var.scheduler_instance_type
  subnet_id              = aws_subnet.private[count.index % length(local.azs)].id
  vpc_security_group_ids = [aws_security_group.scheduler.id]
  iam_instance_profile   = aws_iam_instance_profile.scheduler.name
  key_name               = var.enable_ssh && var.key_name != "" ? var.key_name : null
  ebs_optimized          = true
  monitoring             = true
  # EC2 takes at most 16 KiB of user data; gzipped (cloud-init unpacks it) it is about 7 KiB.
  # Every host gets the same user data: nothing in it is per host.
  user_data_base64 = base64gzip(local.scheduler_user_data)
  # A new release or config replaces the hosts; the cache survives in the bucket, and with
  # two or more the state survives in the database. A plain apply replaces every host at
  # once; to keep serving, apply one first (terraform apply -target='aws_instance.scheduler[0]'),
  # wait until its targets are healthy, then apply the rest.
  user_data_replace_on_change = true

  metadata_options {
    http_tokens                 = "required" # IMDSv2 only
    http_endpoint               = "enabled"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_type = "gp3"
    volume_size = var.scheduler_disk_gb
    encrypted   = true
    kms_key_id  = local.kms_key_arn
  }

  maintenance_options {
    auto_recovery = "default"
  }

  tags = { Name = "${var.name}-scheduler-${count.index}" }
}

# --- TLS front -------------------------------------------------------------------------

resource "aws_lb" "front" {
  #checkov:skip=CKV_AWS_91:NLB access logs record only TLS connections (no gRPC calls); Apus logs every call. Enable them with an access_logs block and a log bucket if your audit needs it.
  #checkov:skip=CKV_AWS_150:Deletion protection off so that terraform destroy works for this example; turn it on for a long-lived deployment.
  #checkov:skip=CKV2_AWS_28:WAF does not apply to Network Load Balancers (layer 4); clients are limited by the security group and bearer tokens.
  name_prefix                      = "apus-"
  load_balancer_type               = "network"
  internal                         = var.internal_load_balancer
  subnets                          = var.internal_load_balancer ? aws_subnet.private[*].id : aws_subnet.public[*].id
  security_groups                  = [aws_security_group.nlb.id]
  enable_cross_zone_load_balancing = true
}

resource "aws_lb_target_group" "scheduler" {
  name_prefix = "apus-"
  port        = var.nlb_target_tls ? 50051 : 50052
  protocol    = var.nlb_target_tls ? "TLS" : "TCP"
  vpc_id      = aws_vpc.main.id
  target_type = "instance"
  # Long-lived Execute streams: let them finish when the target is replaced.
  deregistration_delay = 300

  # /readyz on the admin port: 503 while the host drains or its database does not answer.
  # If every host fails it, the NLB sends to all of them (fail open) and clients get
  # UNAVAILABLE from Apus, which Bazel retries.
  health_check {
    protocol            = "HTTP"
    port                = "9091"
    path                = "/readyz"
    matcher             = "200"
    interval            = 10
    timeout             = 6
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
}

resource "aws_lb_target_group_attachment" "scheduler" {
  count            = var.scheduler_count
  target_group_arn = aws_lb_target_group.scheduler.arn
  target_id        = aws_instance.scheduler[count.index].id
  port             = aws_lb_target_group.scheduler.port
}

resource "aws_lb_listener" "tls" {
  load_balancer_arn = aws_lb.front.arn
  port              = 443
  protocol          = "TLS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  alpn_policy       = "HTTP2Only"
  certificate_arn   = local.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.scheduler.arn
  }
}

# --- Internal front for the workers ------------------------------------------------------

resource "aws_lb" "workers" {
  #checkov:skip=CKV_AWS_91:NLB access logs record only TLS connections (no gRPC calls); Apus logs every call. Enable them with an access_logs block and a log bucket if your audit needs it.
  #checkov:skip=CKV_AWS_150:Deletion protection off so that terraform destroy works for this example; turn it on for a long-lived deployment.
  #checkov:skip=CKV2_AWS_28:WAF does not apply to Network Load Balancers (layer 4); only the workers' security group reaches this internal one.
  name_prefix                      = "apusw-"
  load_balancer_type               = "network"
  internal                         = true
  subnets                          = aws_subnet.private[*].id
  security_groups                  = [aws_security_group.worker_nlb.id]
  enable_cross_zone_load_balancing = true
}

resource "aws_lb_target_group" "workers" {
  name_prefix = "apusw-"
  port        = 50051
  protocol    = "TCP" # passthrough: workers verify Apus's own certificate (internal CA)
  vpc_id      = aws_vpc.main.id
  target_type = "instance"
  # Apus sees the NLB's address, so the hosts' security group can admit the NLB's group
  # alone; worker identity is the bearer token, not the address.
  preserve_client_ip = "false"
  # A worker's stream to a deregistered host ends after this; it reconnects to another.
  deregistration_delay = 60

  health_check {
    protocol            = "HTTP"
    port                = "9091"
    path                = "/readyz"
    matcher             = "200"
    interval            = 10
    timeout             = 6
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
}

resource "aws_lb_target_group_attachment" "workers" {
  count            = var.scheduler_count
  target_group_arn = aws_lb_target_group.workers.arn
  target_id        = aws_instance.scheduler[count.index].id
  port             = 50051
}

resource "aws_lb_listener" "workers" {
  #checkov:skip=CKV_AWS_2:TCP passthrough on purpose: the TLS is Apus's own (internal CA, verified by the workers), end to end.
  #checkov:skip=CKV_AWS_103:TCP passthrough on purpose: the TLS is Apus's own (internal CA, verified by the workers), end to end.
  load_balancer_arn = aws_lb.workers.arn
  port              = 50051
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.workers.arn
  }
}

# --- Certificate and names -------------------------------------------------------------

locals {
  cas_name       = "cas.${var.domain_name}"
  scheduler_name = "scheduler.${var.domain_name}"
}

resource "aws_acm_certificate" "front" {
  count                     = var.certificate_arn == "" ? 1 : 0
  domain_name               = local.scheduler_name
  subject_alternative_names = [local.cas_name]
  validation_method         = "DNS"

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_route53_record" "validation" {
  for_each = var.certificate_arn == "" ? {
    for o in aws_acm_certificate.front[0].domain_validation_options : o.domain_name => o
  } : {}
  zone_id         = var.route53_zone_id
  name            = each.value.resource_record_name
  type            = each.value.resource_record_type
  records         = [each.value.resource_record_value]
  ttl             = 300
  allow_overwrite = true
}

resource "aws_acm_certificate_validation" "front" {
  count                   = var.certificate_arn == "" ? 1 : 0
  certificate_arn         = aws_acm_certificate.front[0].arn
  validation_record_fqdns = [for r in aws_route53_record.validation : r.fqdn]
}

locals {
  certificate_arn = var.certificate_arn != "" ? var.certificate_arn : aws_acm_certificate_validation.front[0].certificate_arn
}

# Both names point at the same NLB and processes today; separate names let the CAS move to
# its own hosts later without reconfiguring clients.
resource "aws_route53_record" "service" {
  for_each = toset([local.cas_name, local.scheduler_name])
  zone_id  = var.route53_zone_id
  name     = each.key
  type     = "A"

  alias {
    name                   = aws_lb.front.dns_name
    zone_id                = aws_lb.front.zone_id
    evaluate_target_health = true
  }
}
