output "remote_executor" {
  description = "Bazel flag value: --remote_executor=<this> (resolvable inside the VNet or through its DNS forwarder)."
  value       = "grpcs://scheduler.${var.domain}:443"
}

output "cas_endpoint" {
  description = "The CAS and action cache for workers and --remote_cache users."
  value       = "grpcs://cas.${var.domain}:50051"
}

output "frontend_ip" {
  description = "Private IP of the internal load balancer that scheduler.<domain> and cas.<domain> resolve to."
  value       = local.frontend_ip
}

output "key_vault_name" {
  description = "Key Vault to upload the certificates and tokens into (az keyvault secret set --vault-name ...)."
  value       = azurerm_key_vault.apus.name
}

output "secret_names" {
  description = "Secrets cloud-init reads from the Key Vault, each to be set to the file of the same name (ca-pem is ca.pem, ...)."
  value       = sort(tolist(local.all_secrets))
}

output "server_vm_id" {
  description = "Resource ID of the CAS + scheduler VM (the custom metrics are posted against it)."
  value       = azurerm_linux_virtual_machine.server.id
}

output "server_private_ip" {
  description = "Private IP of the CAS + scheduler VM."
  value       = azurerm_network_interface.server.private_ip_address
}

output "workers_scale_set" {
  description = "Name of the worker VM scale set."
  value       = azurerm_linux_virtual_machine_scale_set.workers.name
}

output "resource_group" {
  description = "Resource group holding everything."
  value       = azurerm_resource_group.apus.name
}

output "bastion_name" {
  description = "Azure Bastion host name (null unless enable_bastion)."
  value       = var.enable_bastion ? azurerm_bastion_host.apus[0].name : null
}
