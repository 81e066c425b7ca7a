# Azure autoscale has no "set capacity to this metric" (no target tracking on custom
# metrics): rules compare a metric with a threshold and add or remove N instances. The
# publisher on the server VM therefore posts, every minute, into the custom namespace "apus"
# on that VM:
#   desired_workers  the scheduler's schedulers.*.desired_workers sum (for dashboards)
#   worker_gap       desired_workers minus the workers connected to the scheduler
# and the rules below close the gap: add scale_out_step while it is positive, remove one
# VM at a time while it has been negative for 10 minutes, within [workers_min, workers_max].
resource "azurerm_monitor_autoscale_setting" "workers" {
  name                = "${var.name}-workers-autoscale"
  location            = azurerm_resource_group.apus.location
  resource_group_name = azurerm_resource_group.apus.name
  target_resource_id  = azurerm_linux_virtual_machine_scale_set.workers.id
  tags                = var.tags

  profile {
    name = "status-feed"

    capacity {
      default = var.workers_default
      minimum = var.workers_min
      maximum = var.workers_max
    }

    rule {
      metric_trigger {
        metric_name        = "worker_gap"
        metric_namespace   = "apus"
        metric_resource_id = azurerm_linux_virtual_machine.server.id
        time_grain         = "PT1M"
        statistic          = "Average"
        time_window        = "PT5M"
        time_aggregation   = "Average"
        operator           = "GreaterThan"
        threshold          = 0.5
      }

      scale_action {
        direction = "Increase"
        type      = "ChangeCount"
        value     = var.scale_out_step
        cooldown  = "PT5M"
      }
    }

    rule {
      metric_trigger {
        metric_name        = "worker_gap"
        metric_namespace   = "apus"
        metric_resource_id = azurerm_linux_virtual_machine.server.id
        time_grain         = "PT1M"
        statistic          = "Max"
        time_window        = "PT10M"
        time_aggregation   = "Maximum"
        operator           = "LessThan"
        threshold          = -0.5
      }

      scale_action {
        direction = "Decrease"
        type      = "ChangeCount"
        value     = 1
        cooldown  = "PT10M"
      }
    }
  }
}
