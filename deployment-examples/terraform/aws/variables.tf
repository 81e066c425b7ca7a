variable "name" {
  description = "Prefix for every resource name (letters, digits and dashes)."
  type        = string
  default     = "apus"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name))
    error_message = "name: 2-21 lowercase letters, digits or dashes, starting with a letter."
  }
}

variable "region" {
  description = "AWS region for every resource."
  type        = string
  default     = "us-east-1"
}

variable "tags" {
  description = "Extra tags added to every resource (on top of Project and Deployment)."
  type        = map(string)
  default     = {}
}

variable "domain_name" {
  description = "Public Route53 hosted zone the cas and scheduler names are created in (e.g. build.example.com gives scheduler.build.example.com)."
  type        = string
}

variable "route53_zone_id" {
  description = "ID of the existing public hosted zone for domain_name."
  type        = string
}

variable "certificate_arn" {
  description = "ARN of an existing ACM certificate covering cas.<domain_name> and scheduler.<domain_name>. Empty: one is requested and DNS-validated in route53_zone_id."
  type        = string
  default     = ""
}

variable "allowed_client_cidrs" {
  description = "CIDR blocks allowed to reach the TLS listener (port 443): your office, VPN or CI runners. No default on purpose: the cache must not be open to the internet."
  type        = list(string)

  validation {
    condition     = length(var.allowed_client_cidrs) > 0 && !contains(var.allowed_client_cidrs, "0.0.0.0/0")
    error_message = "allowed_client_cidrs: list at least one CIDR, and not 0.0.0.0/0."
  }
}

variable "internal_load_balancer" {
  description = "true: the NLB gets private addresses only (clients come through a VPN, peering or Direct Connect). false: internet-facing, still limited to allowed_client_cidrs."
  type        = bool
  default     = false
}

variable "nlb_target_tls" {
  description = "false (default): the NLB forwards the decrypted h2 stream to a plaintext listener on 50052 that only the NLB's security group reaches. true: the NLB re-encrypts to Apus's TLS listener on 50051; Apus requires ALPN h2 there, so use it only once you have checked that your NLB offers h2 to TLS targets."
  type        = bool
  default     = false
}

variable "vpc_cidr" {
  description = "CIDR block of the VPC (split into /20s: public subnets for the NLB and NAT, private ones for instances)."
  type        = string
  default     = "10.40.0.0/16"
}

variable "availability_zone_count" {
  description = "How many availability zones the subnets (and so the worker group) span; 2 or 3."
  type        = number
  default     = 2

  validation {
    condition     = var.availability_zone_count >= 2 && var.availability_zone_count <= 3
    error_message = "availability_zone_count: 2 or 3."
  }
}

variable "enable_ssm_endpoints" {
  description = "Create interface VPC endpoints for SSM, SSM messages, EC2 messages and CloudWatch, so Session Manager and the metric publisher work without the NAT gateway (about 7 USD a month each per AZ)."
  type        = bool
  default     = false
}

variable "enable_ssh" {
  description = "Open port 22 from ssh_cidrs on every instance and install key_name. Off by default: use SSM Session Manager (aws ssm start-session)."
  type        = bool
  default     = false
}

variable "ssh_cidrs" {
  description = "CIDR blocks allowed to SSH in when enable_ssh is true (they still need a route: a VPN or bastion, since instances have no public IP)."
  type        = list(string)
  default     = []

  validation {
    condition     = !contains(var.ssh_cidrs, "0.0.0.0/0")
    error_message = "ssh_cidrs: not 0.0.0.0/0."
  }
}

variable "key_name" {
  description = "EC2 key pair name installed on instances when enable_ssh is true."
  type        = string
  default     = ""
}

variable "apus_release_url" {
  description = "HTTPS URL or s3:// URI of an Apus release tarball holding bin/apus and deployment-examples/systemd/. Instances get s3:GetObject on an s3:// object."
  type        = string
}

variable "apus_release_sha256" {
  description = "SHA-256 of the release tarball; cloud-init refuses a tarball that does not match."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.apus_release_sha256))
    error_message = "apus_release_sha256: 64 lowercase hex digits."
  }
}

variable "ami_id" {
  description = "AMI for every instance. Empty: the latest Debian 12 (bookworm) arm64 or amd64 image, matching instance_architecture."
  type        = string
  default     = ""
}

variable "instance_architecture" {
  description = "CPU architecture of the instances and of the Apus release: arm64 (Graviton, cheaper) or x86_64."
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.instance_architecture)
    error_message = "instance_architecture: arm64 or x86_64."
  }
}

variable "scheduler_count" {
  description = "Number of scheduler hosts (each CAS, action cache and scheduler in one process), spread over the availability zones. 2 or more: they share their queue in an RDS PostgreSQL database (database.tf) and survive the loss of any one; 1: one host with its state in memory and no database."
  type        = number
  default     = 2

  validation {
    condition     = var.scheduler_count >= 1 && var.scheduler_count <= 6 && floor(var.scheduler_count) == var.scheduler_count
    error_message = "scheduler_count: a whole number from 1 to 6."
  }
}

variable "scheduler_instance_type" {
  description = "Instance type of each scheduler host (CAS, action cache and scheduler in one process)."
  type        = string
  default     = "m7g.large"
}

variable "scheduler_disk_gb" {
  description = "Size of each scheduler host's gp3 root volume in GiB; the CAS disk tier uses up to 80% of it."
  type        = number
  default     = 200
}

variable "database_instance_class" {
  description = "RDS instance class of the schedulers' PostgreSQL (scheduler_count >= 2). db.t4g.small suits a team; db.t4g.micro a test setup; an m7g class a large fleet."
  type        = string
  default     = "db.t4g.small"
}

variable "database_multi_az" {
  description = "Run the database Multi-AZ (a synchronous standby in another zone, failover in about 60-120 s). false halves its price for a test setup, and a zone or instance failure then stops remote execution until RDS has recovered it."
  type        = bool
  default     = true
}

variable "database_storage_gb" {
  description = "Initial gp3 storage of the database in GiB (20 is RDS's minimum); RDS grows it up to five times this on its own."
  type        = number
  default     = 20

  validation {
    condition     = var.database_storage_gb >= 20
    error_message = "database_storage_gb: at least 20 (RDS's gp3 minimum)."
  }
}

variable "database_backup_retention_days" {
  description = "Days of automated backups (point-in-time recovery) of the database, 1 to 35."
  type        = number
  default     = 7

  validation {
    condition     = var.database_backup_retention_days >= 1 && var.database_backup_retention_days <= 35
    error_message = "database_backup_retention_days: 1 to 35."
  }
}

variable "database_deletion_protection" {
  description = "Deletion protection on the database: terraform destroy, and any change that would replace it (wiping the builds in flight), stop until you set this to false and apply."
  type        = bool
  default     = true
}

variable "database_final_snapshot" {
  description = "Take a final snapshot when the database is destroyed. false (default): its content is transient (queue, operations in flight) and not worth restoring; the cache is in the bucket."
  type        = bool
  default     = false
}

variable "worker_instance_type" {
  description = "Instance type of the workers."
  type        = string
  default     = "c7g.2xlarge"
}

variable "worker_disk_gb" {
  description = "Size of each worker's gp3 root volume in GiB (input cache and action work directories)."
  type        = number
  default     = 100
}

variable "worker_slots" {
  description = "Actions each worker runs at once (max_concurrent_actions); usually the vCPU count."
  type        = number
  default     = 8
}

variable "min_workers" {
  description = "Smallest worker fleet; 0 lets the fleet scale to nothing when the queue is empty."
  type        = number
  default     = 0
}

variable "max_workers" {
  description = "Largest worker fleet, whatever desired_workers says: the cost ceiling."
  type        = number
  default     = 10

  validation {
    condition     = var.max_workers >= 1 && var.max_workers >= var.min_workers
    error_message = "max_workers: at least 1 and at least min_workers."
  }
}

variable "scale_in_delay_seconds" {
  description = "The fleet shrinks only after desired_workers has stayed lower this long (the publisher publishes the largest value seen in this window); keeps workers between two waves of a build."
  type        = number
  default     = 600
}

variable "worker_drain_timeout_seconds" {
  description = "How long a worker leaving the group (scale-in, instance refresh) may take to finish its running actions after it stops taking new ones: size it to your longest action. The termination lifecycle hook's heartbeat timeout (capped at AWS's 7200; the worker sends heartbeats beyond that). Actions still running after it are run again on another worker."
  type        = number
  default     = 3600

  validation {
    condition     = var.worker_drain_timeout_seconds >= 60 && var.worker_drain_timeout_seconds <= 172800
    error_message = "worker_drain_timeout_seconds: 60 to 172800 (48 hours, the longest a lifecycle hook may hold an instance)."
  }
}

variable "cache_expiry_days" {
  description = "Objects in the cache bucket are deleted this many days after they were written (S3 lifecycle); Bazel uploads them again when needed."
  type        = number
  default     = 30
}

variable "force_destroy" {
  description = "Let terraform destroy delete the cache bucket while it still holds objects. false (default): destroy stops at a non-empty bucket, so the cache survives a mistaken destroy."
  type        = bool
  default     = false
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key for the bucket, SSM parameters and disks. Empty: a key is created (with rotation)."
  type        = string
  default     = ""
}

variable "log_retention_days" {
  description = "Retention of the CloudWatch log groups (VPC flow logs)."
  type        = number
  default     = 365
}

variable "client_principals" {
  description = "Client principals that get a token, and their permissions on every instance (read, write, write_ac, execute). The defaults: CI may write the action cache, developers may not."
  type        = map(list(string))
  default = {
    ci  = ["read", "write", "write_ac", "execute"]
    dev = ["read", "write", "execute"]
  }
}
