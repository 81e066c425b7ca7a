variable "subscription_id" {
  description = "Azure subscription to deploy into."
  type        = string
}

variable "name" {
  description = "Prefix for every resource name (lowercase letters and digits, 3-12 characters)."
  type        = string
  default     = "apus"
}

variable "location" {
  description = "Azure region, e.g. westeurope."
  type        = string
  default     = "westeurope"
}

variable "domain" {
  description = "Private DNS zone holding scheduler.<domain> and cas.<domain>; the server certificate must name both."
  type        = string
  default     = "apus.internal"
}

variable "vnet_cidr" {
  description = "Address space of the virtual network."
  type        = string
  default     = "10.42.0.0/16"
}

variable "client_cidrs" {
  description = "Networks allowed to reach the gRPC ports (Bazel clients on VPN, peered VNets, CI runners). The VNet itself is always allowed."
  type        = list(string)
  default     = []
}

variable "admin_cidrs" {
  description = "Public addresses of operators allowed through the Key Vault firewall (to upload certificates and tokens)."
  type        = list(string)
  default     = []
}

variable "enable_bastion" {
  description = "Create an Azure Bastion host (SSH to the VMs through the portal or `az network bastion ssh`). Off: no SSH path at all."
  type        = bool
  default     = false
}

variable "admin_username" {
  description = "Login user on the VMs (only usable through Bastion)."
  type        = string
  default     = "apusadmin"
}

variable "admin_ssh_public_key" {
  description = "SSH public key for admin_username (Azure requires one; password login is disabled)."
  type        = string
}

variable "server_vm_size" {
  description = "VM size of the CAS + scheduler VM."
  type        = string
  default     = "Standard_D4s_v5"
}

variable "cas_disk_size_gb" {
  description = "Size of the managed data disk holding the filesystem CAS and action cache (mounted at /var/lib/apus)."
  type        = number
  default     = 256
}

variable "cas_disk_sku" {
  description = "Storage SKU of the CAS data disk (Premium_LRS, PremiumV2_LRS, StandardSSD_LRS)."
  type        = string
  default     = "Premium_LRS"
}

variable "cas_max_bytes" {
  description = "APUS_CAS_MAX_BYTES: the CAS evicts beyond this; keep it about 80% of the data disk."
  type        = number
  default     = 214748364800
}

variable "worker_vm_size" {
  description = "VM size of the worker scale set instances."
  type        = string
  default     = "Standard_D8s_v5"
}

variable "worker_slots" {
  description = "Concurrent actions per worker VM (APUS_WORKER_SLOTS); the VM's vCPU count is a good start."
  type        = number
  default     = 8
}

variable "workers_min" {
  description = "Fewest worker VMs the autoscaler keeps (0 lets an idle fleet cost nothing)."
  type        = number
  default     = 0
}

variable "workers_max" {
  description = "Most worker VMs the autoscaler starts."
  type        = number
  default     = 10
}

variable "workers_default" {
  description = "Worker count when the desired_workers metric is missing (publisher down)."
  type        = number
  default     = 1
}

variable "worker_drain_timeout_minutes" {
  description = "How long a worker VM leaving the scale set may take to finish its running actions after it stops taking new ones (the termination notification's timeout; Azure allows 5 to 15). Actions still running after it are run again on another worker."
  type        = number
  default     = 15

  validation {
    condition     = var.worker_drain_timeout_minutes >= 5 && var.worker_drain_timeout_minutes <= 15
    error_message = "worker_drain_timeout_minutes: 5 to 15 (Azure's range for termination notifications)."
  }
}

variable "scale_out_step" {
  description = "Worker VMs added per scale-out action while desired_workers exceeds the connected workers."
  type        = number
  default     = 2
}

variable "image" {
  description = "Marketplace image of all VMs (needs systemd, python3 and curl: Ubuntu 22.04/24.04 or Debian 12)."
  type = object({
    publisher = string
    offer     = string
    sku       = string
    version   = string
  })
  default = {
    publisher = "Canonical"
    offer     = "ubuntu-24_04-lts"
    sku       = "server"
    version   = "latest"
  }
}

variable "apus_binary_url" {
  description = "HTTPS URL of a Linux x86_64 apus executable (swift build -c release --static-swift-stdlib), e.g. a release asset or a blob with a SAS token."
  type        = string
}

variable "apus_binary_sha256" {
  description = "SHA-256 of the executable at apus_binary_url; cloud-init refuses anything else."
  type        = string
}

variable "apus_source_url" {
  description = "HTTPS URL of a tar.gz of the Apus repository at the same version (for deployment-examples/systemd: units, configs, install.sh)."
  type        = string
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
