# The scheduler host: one Apus process with the cas, action-cache and scheduler roles
# (fast_slow store: memory and the local disk in front of the S3 bucket), behind an NLB
# that terminates the public TLS with an ACM certificate (ALPN HTTP2Only, so gRPC clients
# get h2).
#
# Why TLS at the NLB and not at Apus: ACM certificates renew themselves and cannot be
# exported to an instance, so the public certificate never touches a disk. What it costs:
# the NLB ends the client's TLS, so Apus cannot see client certificates (use the bearer
# tokens in secrets.tf, not mTLS) and sees the NLB's address, not the client's.
#
# NLB to Apus: by default the NLB forwards the decrypted HTTP/2 stream to a plaintext (h2c)
# listener on 50052 that only the NLB's security group reaches; workers use Apus's TLS
# listener on 50051 (internal CA). nlb_target_tls = true re-encrypts to 50051 instead, but
# Apus closes TLS connections that do not negotiate ALPN h2, and whether the NLB offers ALPN
# to TLS targets is not verified here: check it before turning it on.
#
# One scheduler is a single point of failure for remote execution (not for the data: the
# bucket keeps the CAS and AC). The instance recovers on host failure (auto-recovery) and
# its state beyond the bucket is a cache; a second scheduler would need Apus to share the
# queue, which it does not.

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
    nlb_listener = var.nlb_target_tls ? "" : jsonencode({
      listen    = "0.0.0.0:50052"
      instances = { "" = { cas = "cas", action_cache = "ac", execution = "main" } }
    })
    autoscaling_group      = local.worker_group_name
    scale_in_delay_seconds = var.scale_in_delay_seconds
  })
}

resource "aws_instance" "scheduler" {
  ami                    = local.ami_id
  instance_type          = var.scheduler_instance_type
  subnet_id              = aws_subnet.private[0].id
  private_ip             = local.scheduler_private_ip
  vpc_security_group_ids = [aws_security_group.scheduler.id]
  iam_instance_profile   = aws_iam_instance_profile.scheduler.name
  key_name               = var.enable_ssh && var.key_name != "" ? var.key_name : null
  ebs_optimized          = true
  monitoring             = true
  # EC2 takes at most 16 KiB of user data; gzipped (cloud-init unpacks it) it is about 6 KiB.
  user_data_base64 = base64gzip(local.scheduler_user_data)
  # A new release or config replaces the host; the cache survives in the bucket.
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

  tags = { Name = "${var.name}-scheduler" }
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

  health_check {
    protocol            = "TCP"
    port                = "traffic-port"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
}

resource "aws_lb_target_group_attachment" "scheduler" {
  target_group_arn = aws_lb_target_group.scheduler.arn
  target_id        = aws_instance.scheduler.id
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

# Both names point at the same NLB and process today; separate names let the CAS move to
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
