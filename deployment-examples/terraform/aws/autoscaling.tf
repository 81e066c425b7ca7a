# Scaling the workers on Apus's desired_workers.
#
# The publisher on the scheduler host puts Apus/DesiredWorkers (dimension
# AutoScalingGroupName) every minute; desired_workers is already a fleet size
# (ceil((queued + running) / slots per worker)), so the group should simply take that value.
#
# Why step scaling with ExactCapacity and not target tracking: target tracking on "desired
# per instance" (DesiredWorkers / InService, target 1) scales proportionally to the current
# size, so it cannot leave zero instances (0 × anything = 0) and it overshoots and
# oscillates while new workers boot. Setting the desired capacity directly from the
# publisher (autoscaling:SetDesiredCapacity) would work but gives the scheduler host write
# access to the group. Step scaling with adjustment type ExactCapacity maps each value of
# the metric to a capacity: an alarm that is always in ALARM while data arrives
# (DesiredWorkers >= 0) invokes the policy once a minute, and the step the value falls in
# sets the group's desired capacity (clamped to min_workers..max_workers by Auto Scaling).
# A policy has at most 20 steps: with max_workers above 19, steps are spread evenly and a
# value between two steps rounds up. Scale-in smoothing is done by the publisher
# (scale_in_delay_seconds). If the publisher stops, the alarm goes to INSUFFICIENT_DATA and
# the fleet stays as it is.

locals {
  step_count = min(var.max_workers, 19)
  # Step boundaries b_0 = 0 < b_1 < ... < b_n = max_workers.
  step_bounds = distinct([for k in range(local.step_count + 1) : ceil(k * var.max_workers / local.step_count)])
}

resource "aws_autoscaling_policy" "desired_workers" {
  name                      = "${var.name}-desired-workers"
  autoscaling_group_name    = aws_autoscaling_group.workers.name
  policy_type               = "StepScaling"
  adjustment_type           = "ExactCapacity"
  estimated_instance_warmup = 120

  # [b_k, b_k+1) -> b_k+1 - 1 (exact when the bounds are 1 apart), [max_workers, inf) -> max.
  dynamic "step_adjustment" {
    for_each = range(length(local.step_bounds) - 1)
    content {
      metric_interval_lower_bound = local.step_bounds[step_adjustment.value]
      metric_interval_upper_bound = local.step_bounds[step_adjustment.value + 1]
      scaling_adjustment          = local.step_bounds[step_adjustment.value + 1] - 1
    }
  }

  step_adjustment {
    metric_interval_lower_bound = var.max_workers
    scaling_adjustment          = var.max_workers
  }
}

resource "aws_cloudwatch_metric_alarm" "desired_workers" {
  alarm_name          = "${var.name}-desired-workers"
  alarm_description   = "Always in ALARM while the publisher reports: drives the worker group's ExactCapacity step policy once a minute."
  namespace           = "Apus"
  metric_name         = "DesiredWorkers"
  dimensions          = { AutoScalingGroupName = aws_autoscaling_group.workers.name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = 0
  treat_missing_data  = "missing"
  alarm_actions       = [aws_autoscaling_policy.desired_workers.arn]
}
