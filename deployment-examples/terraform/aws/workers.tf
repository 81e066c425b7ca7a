# Workers: a launch template (Debian, IMDSv2 only, encrypted gp3, no public IP, the worker
# role) and an Auto Scaling Group across the private subnets, sized by autoscaling.tf, with a
# termination lifecycle hook that lets each worker drain before it goes.

locals {
  worker_group_name = "${var.name}-workers"
  worker_drain_hook = "${var.name}-worker-drain"

  lifecycle_files = {
    script  = file("${path.module}/lifecycle/apus-lifecycle.py")
    service = file("${path.module}/lifecycle/apus-lifecycle.service")
  }

  worker_user_data = templatefile("${path.module}/cloud-init/worker.yaml.tftpl", {
    release_url     = var.apus_release_url
    release_sha256  = var.apus_release_sha256
    scheduler_host  = aws_lb.workers.dns_name # the internal NLB in front of every scheduler host
    server_name     = local.internal_server_name
    ca_cert_pem     = tls_self_signed_cert.ca.cert_pem
    token_parameter = aws_ssm_parameter.worker_token.name
    slots           = var.worker_slots
    cache_bytes     = floor(var.worker_disk_gb * 0.5 * 1024 * 1024 * 1024)
    aws_helper      = file("${path.module}/cloud-init/apus-aws-helper.py")

    # Scale-in draining (apus-lifecycle.service).
    lifecycle_script      = local.lifecycle_files.script
    lifecycle_service     = local.lifecycle_files.service
    autoscaling_group     = local.worker_group_name
    lifecycle_hook        = local.worker_drain_hook
    drain_timeout_seconds = var.worker_drain_timeout_seconds
    region                = var.region
  })
}

resource "aws_launch_template" "worker" {
  name_prefix   = "${var.name}-worker-"
  image_id      = local.ami_id
  instance_type = var.worker_instance_type
  key_name      = var.enable_ssh && var.key_name != "" ? var.key_name : null
  user_data     = base64gzip(local.worker_user_data) # gzipped: EC2's limit is 16 KiB
  ebs_optimized = true

  iam_instance_profile {
    arn = aws_iam_instance_profile.worker.arn
  }

  network_interfaces {
    associate_public_ip_address = false
    security_groups             = [aws_security_group.worker.id]
    delete_on_termination       = true
  }

  metadata_options {
    http_tokens                 = "required"
    http_endpoint               = "enabled"
    http_put_response_hop_limit = 1
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_type           = "gp3"
      volume_size           = var.worker_disk_gb
      encrypted             = true
      kms_key_id            = local.kms_key_arn
      delete_on_termination = true
    }
  }

  monitoring {
    enabled = true
  }

  tag_specifications {
    resource_type = "instance"
    tags          = { Name = "${var.name}-worker" }
  }

  depends_on = [aws_instance.scheduler]
}

resource "aws_autoscaling_group" "workers" {
  name                = local.worker_group_name
  vpc_zone_identifier = aws_subnet.private[*].id
  min_size            = var.min_workers
  max_size            = var.max_workers
  # desired_capacity is left to the scaling policy (and ignored below), so an apply does not
  # reset a fleet that is busy.
  health_check_type         = "EC2"
  health_check_grace_period = 300
  default_instance_warmup   = 120
  # A worker leaving (scale-in, instance refresh, health replacement) first drains: the
  # lifecycle hook below holds it in Terminating:Wait until apus-lifecycle completes it.
  termination_policies = ["OldestLaunchTemplate", "ClosestToNextInstanceHour"]

  launch_template {
    id      = aws_launch_template.worker.id
    version = aws_launch_template.worker.latest_version
  }

  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 50
    }
  }

  tag {
    key                 = "Name"
    value               = "${var.name}-worker"
    propagate_at_launch = true
  }

  lifecycle {
    ignore_changes = [desired_capacity]
  }
}

# Scale-in waits for running actions. The group holds a terminating worker in
# Terminating:Wait; apus-lifecycle on the worker sees target-lifecycle-state = Terminated,
# POSTs /drain, waits until nothing runs (heartbeats every minute, at most
# worker_drain_timeout_seconds) and completes the action with CONTINUE. The heartbeat timeout
# is the drain timeout (AWS caps it at 2 hours; heartbeats carry longer drains): if the
# service dies, the worker, already drained, still gets that long to finish. default_result
# CONTINUE: whatever happens, the instance is terminated in the end.
resource "aws_autoscaling_lifecycle_hook" "worker_drain" {
  name                   = local.worker_drain_hook
  autoscaling_group_name = aws_autoscaling_group.workers.name
  lifecycle_transition   = "autoscaling:EC2_INSTANCE_TERMINATING"
  default_result         = "CONTINUE"
  heartbeat_timeout      = min(var.worker_drain_timeout_seconds, 7200)
}
