# Workers: a VM scale set in the private workers subnet (no public IPs, no inbound rules),
# each VM running apus-worker@1.service with APUS_WORKER_SLOTS slots. The autoscale setting
# (autoscaling.tf) owns the instance count.
resource "azurerm_linux_virtual_machine_scale_set" "workers" {
  name                            = "${var.name}-workers"
  location                        = azurerm_resource_group.apus.location
  resource_group_name             = azurerm_resource_group.apus.name
  sku                             = var.worker_vm_size
  instances                       = var.workers_default
  admin_username                  = var.admin_username
  disable_password_authentication = true
  encryption_at_host_enabled      = true
  secure_boot_enabled             = true
  vtpm_enabled                    = true
  upgrade_mode                    = "Manual"
  zones                           = ["1", "2", "3"]
  tags                            = var.tags

  custom_data = base64encode(templatefile("${path.module}/cloud-init/worker.yaml.tftpl", {
    bootstrap_env = base64encode(templatefile("${path.module}/cloud-init/bootstrap.env.tftpl", {
      roles          = "worker"
      workers        = 1
      vault          = azurerm_key_vault.apus.name
      secrets        = join(" ", local.worker_secrets)
      binary_url     = var.apus_binary_url
      binary_sha256  = var.apus_binary_sha256
      source_url     = var.apus_source_url
      data_disk_lun  = ""
      cas_host_local = ""
    }))
    apus_env = base64encode(templatefile("${path.module}/cloud-init/apus.env.tftpl", {
      domain        = var.domain
      cas_max_bytes = var.cas_max_bytes
      worker_slots  = var.worker_slots
    }))
    bootstrap_sh             = filebase64("${path.module}/scripts/bootstrap.sh")
    scheduled_events_py      = filebase64("${path.module}/lifecycle/apus-scheduled-events.py")
    scheduled_events_service = filebase64("${path.module}/lifecycle/apus-scheduled-events.service")
  }))

  admin_ssh_key {
    username   = var.admin_username
    public_key = var.admin_ssh_public_key
  }

  identity {
    type = "SystemAssigned"
  }

  source_image_reference {
    publisher = var.image.publisher
    offer     = var.image.offer
    sku       = var.image.sku
    version   = var.image.version
  }

  os_disk {
    caching              = "ReadWrite"
    storage_account_type = "Premium_LRS"
    disk_size_gb         = 128
  }

  network_interface {
    name    = "primary"
    primary = true

    ip_configuration {
      name      = "primary"
      primary   = true
      subnet_id = azurerm_subnet.workers.id
    }
  }

  # Scale-in drains: Azure posts a Terminate scheduled event naming the VM and waits up to
  # this timeout; apus-scheduled-events on the VM drains the worker, waits until nothing
  # runs and approves the event, so an idle worker goes at once. Actions still running at
  # the timeout are run again by the scheduler on another worker.
  termination_notification {
    enabled = true
    timeout = "PT${var.worker_drain_timeout_minutes}M"
  }

  # NewestVM: the youngest workers go first, keeping the warm input caches of the older
  # ones. force_deletion_enabled stays false: a forced delete skips the notification.
  scale_in {
    rule                   = "NewestVM"
    force_deletion_enabled = false
  }

  lifecycle {
    ignore_changes = [instances]
  }
}
