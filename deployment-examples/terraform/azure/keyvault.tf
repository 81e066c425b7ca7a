# Key Vault holds the certificates, keys and tokens; each VM's managed identity may read
# only the secrets its role needs ("Key Vault Secrets User" scoped to single secrets, RBAC
# mode). Terraform creates each secret with a placeholder and never manages its value
# (ignore_changes), so no private key or token ever lands in Terraform state: upload the
# real values with `az keyvault secret set` (README). cloud-init fetches them at boot.
locals {
  server_secrets = ["ca-pem", "server-pem", "server-key", "scheduler-pem", "scheduler-key", "tokens", "ops-token"]
  worker_secrets = ["ca-pem", "worker-pem", "worker-key"]
  all_secrets    = toset(concat(local.server_secrets, local.worker_secrets))
}

resource "azurerm_key_vault" "apus" {
  #checkov:skip=CKV2_AZURE_32:Service endpoints and the vault firewall (default deny; the two subnets and admin_cidrs) instead of a private endpoint, so operators can upload secrets from their own address without VPN; add a private endpoint if the vault must be unreachable from the internet.
  name                          = "${var.name}-kv-${substr(sha1(azurerm_resource_group.apus.id), 0, 6)}"
  location                      = azurerm_resource_group.apus.location
  resource_group_name           = azurerm_resource_group.apus.name
  tenant_id                     = data.azurerm_client_config.current.tenant_id
  sku_name                      = "standard"
  enable_rbac_authorization     = true
  purge_protection_enabled      = true
  soft_delete_retention_days    = 30
  public_network_access_enabled = true
  tags                          = var.tags

  # Reachable only from the two subnets (service endpoints) and the operators' addresses.
  network_acls {
    default_action             = "Deny"
    bypass                     = "AzureServices"
    ip_rules                   = var.admin_cidrs
    virtual_network_subnet_ids = [azurerm_subnet.server.id, azurerm_subnet.workers.id]
  }
}

# Whoever runs Terraform manages the secrets' existence (not their values afterwards).
resource "azurerm_role_assignment" "deployer_secrets" {
  scope                = azurerm_key_vault.apus.id
  role_definition_name = "Key Vault Secrets Officer"
  principal_id         = data.azurerm_client_config.current.object_id
}

resource "azurerm_key_vault_secret" "apus" {
  for_each        = local.all_secrets
  name            = each.value
  value           = "placeholder: az keyvault secret set --vault-name VAULT --name ${each.value} --file FILE"
  key_vault_id    = azurerm_key_vault.apus.id
  content_type    = endswith(each.value, "-key") ? "application/x-pem-file; private" : "text/plain"
  expiration_date = timeadd(timestamp(), "8760h")

  lifecycle {
    ignore_changes = [value, expiration_date, content_type, tags]
  }

  depends_on = [azurerm_role_assignment.deployer_secrets]
}

resource "azurerm_role_assignment" "server_secrets" {
  for_each             = toset(local.server_secrets)
  scope                = azurerm_key_vault_secret.apus[each.value].resource_versionless_id
  role_definition_name = "Key Vault Secrets User"
  principal_id         = azurerm_linux_virtual_machine.server.identity[0].principal_id
}

resource "azurerm_role_assignment" "worker_secrets" {
  for_each             = toset(local.worker_secrets)
  scope                = azurerm_key_vault_secret.apus[each.value].resource_versionless_id
  role_definition_name = "Key Vault Secrets User"
  principal_id         = azurerm_linux_virtual_machine_scale_set.workers.identity[0].principal_id
}
