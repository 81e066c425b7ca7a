# Versions are pinned: Terraform 1.5 or later (for `check` blocks and stable `import`), the
# AWS provider within 5.x (a 6.0 upgrade is a deliberate change, not a side effect of
# `terraform init -upgrade`), and the tls/random providers within their current majors.
terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.60"
    }
    tls = {
      source  = "hashicorp/tls"
      version = "~> 4.0"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = merge({ Project = "apus", Deployment = var.name }, var.tags)
  }
}
