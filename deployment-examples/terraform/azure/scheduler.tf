# The CAS + scheduler VM: apus-cas.service and apus-scheduler.service from
# deployment-examples/systemd, with the CAS and action cache on a managed data disk
# (filesystem stores). Azure Blob Storage does not speak the S3 API, so Apus's s3 store
# cannot use it; see the README for an S3-compatible gateway as an alternative.
locals {
  server_name = "${var.name}-server"
  # Built from parts rather than taken from the VM resource: the VM's own cloud-init needs it.
  server_id   = "/subscriptions/${var.subscription_id}/resourceGroups/${azurerm_resource_group.apus.name}/providers/Microsoft.Compute/virtualMachines/${local.server_name}"
  metrics_url = "https://${azurerm_resource_group.apus.location}.monitoring.azure.com${local.server_id}/metrics"
}

resource "azurerm_network_interface" "server" {
  name                = "${var.name}-server-nic"
  location            = azurerm_resource_group.apus.location
  resource_group_name = azurerm_resource_group.apus.name
  tags                = var.tags

  ip_configuration {
    name                          = "primary"
    subnet_id                     = azurerm_subnet.server.id
    private_ip_address_allocation = "Dynamic"
  }
}

resource "azurerm_linux_virtual_machine" "server" {
  name                            = local.server_name
  location                        = azurerm_resource_group.apus.location
  resource_group_name             = azurerm_resource_group.apus.name
  size                            = var.server_vm_size
  zone                            = "1"
  admin_username                  = var.admin_username
  disable_password_authentication = true
  network_interface_ids           = [azurerm_network_interface.server.id]
  encryption_at_host_enabled      = true
  allow_extension_operations      = false
  secure_boot_enabled             = true
  vtpm_enabled                    = true
  tags                            = var.tags

  custom_data = base64encode(templatefile("${path.module}/cloud-init/server.yaml.tftpl", {
    bootstrap_env = base64encode(templatefile("${path.module}/cloud-init/bootstrap.env.tftpl", {
      roles          = "cas,scheduler"
      workers        = 0
      vault          = azurerm_key_vault.apus.name
      secrets        = join(" ", local.server_secrets)
      binary_url     = var.apus_binary_url
      binary_sha256  = var.apus_binary_sha256
      source_url     = var.apus_source_url
      data_disk_lun  = 0
      cas_host_local = "cas.${var.domain}"
    }))
    apus_env = base64encode(templatefile("${path.module}/cloud-init/apus.env.tftpl", {
      domain        = var.domain
      cas_max_bytes = var.cas_max_bytes
      worker_slots  = var.worker_slots
    }))
    publisher_env = base64encode(templatefile("${path.module}/cloud-init/publisher.env.tftpl", {
      metrics_url = local.metrics_url
    }))
    bootstrap_sh     = filebase64("${path.module}/scripts/bootstrap.sh")
    publisher_py     = filebase64("${path.module}/publisher/apus-metrics-publisher.py")
    publisher_unit   = filebase64("${path.module}/publisher/apus-metrics-publisher.service")
    publisher_timer  = filebase64("${path.module}/publisher/apus-metrics-publisher.timer")
  }))

  admin_ssh_key {
    username   = var.admin_username
    public_key = var.admin_ssh_public_key
  }

  identity {
    type = "SystemAssigned"
  }

  os_disk {
    caching              = "ReadWrite"
    storage_account_type = "Premium_LRS"
    disk_size_gb         = 64
  }

  source_image_reference {
    publisher = var.image.publisher
    offer     = var.image.offer
    sku       = var.image.sku
    version   = var.image.version
  }

  lifecycle {
    # A new image or cloud-init must not silently replace the CAS host; roll it on purpose.
    ignore_changes = [custom_data, source_image_reference]
  }
}

resource "azurerm_managed_disk" "cas" {
  #checkov:skip=CKV_AZURE_93:Encrypted at rest with platform-managed keys (Azure default) and at host; a customer-managed key (disk encryption set) is an option, not required for a build cache.
  name                          = "${var.name}-cas-data"
  location                      = azurerm_resource_group.apus.location
  resource_group_name           = azurerm_resource_group.apus.name
  storage_account_type          = var.cas_disk_sku
  create_option                 = "Empty"
  disk_size_gb                  = var.cas_disk_size_gb
  zone                          = "1"
  public_network_access_enabled = false
  network_access_policy         = "DenyAll"
  tags                          = var.tags

  lifecycle {
    # The CAS and action cache live here: `terraform destroy` fails until this is removed
    # (see "Destroying" in the README).
    prevent_destroy = true
  }
}

resource "azurerm_virtual_machine_data_disk_attachment" "cas" {
  managed_disk_id    = azurerm_managed_disk.cas.id
  virtual_machine_id = azurerm_linux_virtual_machine.server.id
  lun                = 0
  caching            = "ReadOnly"
}

# The publisher posts custom metrics against this VM; it may do nothing else with Monitor.
resource "azurerm_role_assignment" "server_metrics" {
  scope                = azurerm_linux_virtual_machine.server.id
  role_definition_name = "Monitoring Metrics Publisher"
  principal_id         = azurerm_linux_virtual_machine.server.identity[0].principal_id
}
