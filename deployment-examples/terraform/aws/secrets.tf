# Internal TLS and bearer tokens.
#
# Inside the VPC Apus serves TLS on 50051 with a certificate from a private CA made here
# (workers verify it with the CA certificate; with nlb_target_tls the NLB re-encrypts to it). The CA and server
# private keys live in the Terraform state (keep the state in an encrypted, access-controlled
# backend) and the server key in an SSM SecureString the scheduler hosts alone may read
# (every host serves the same certificate).
#
# Tokens: one random token per client principal and one for the workers. Only their SHA-256
# hashes reach the scheduler (in its user data, as Apus's token file wants them); the tokens
# themselves are SSM SecureStrings: `aws ssm get-parameter --with-decryption` hands one to a
# developer or CI, and each worker reads its own at boot.

locals {
  # The name in the hosts' certificate, which the workers verify (tls.server_name) whichever
  # host the internal NLB hands them; no address is in it, so hosts may come and go.
  internal_server_name = "scheduler.${var.name}.internal"
}

resource "tls_private_key" "ca" {
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_self_signed_cert" "ca" {
  private_key_pem       = tls_private_key.ca.private_key_pem
  is_ca_certificate     = true
  validity_period_hours = 24 * 365 * 5
  allowed_uses          = ["cert_signing", "crl_signing"]
  subject {
    common_name  = "${var.name} internal CA"
    organization = "Apus"
  }
}

resource "tls_private_key" "scheduler" {
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_cert_request" "scheduler" {
  private_key_pem = tls_private_key.scheduler.private_key_pem
  dns_names       = [local.internal_server_name]
  subject {
    common_name = local.internal_server_name
  }
}

resource "tls_locally_signed_cert" "scheduler" {
  cert_request_pem      = tls_cert_request.scheduler.cert_request_pem
  ca_private_key_pem    = tls_private_key.ca.private_key_pem
  ca_cert_pem           = tls_self_signed_cert.ca.cert_pem
  validity_period_hours = 24 * 365
  early_renewal_hours   = 24 * 30
  allowed_uses          = ["digital_signature", "key_encipherment", "server_auth"]
}

resource "aws_ssm_parameter" "scheduler_tls_key" {
  name   = "/${var.name}/scheduler/tls-private-key"
  type   = "SecureString"
  key_id = local.kms_key_arn
  value  = tls_private_key.scheduler.private_key_pem
}

resource "random_password" "client" {
  for_each = var.client_principals
  length   = 40
  special  = false
}

resource "random_password" "worker" {
  length  = 40
  special = false
}

resource "aws_ssm_parameter" "client_token" {
  for_each = var.client_principals
  name     = "/${var.name}/tokens/${each.key}"
  type     = "SecureString"
  key_id   = local.kms_key_arn
  value    = random_password.client[each.key].result
}

resource "aws_ssm_parameter" "worker_token" {
  name   = "/${var.name}/tokens/worker"
  type   = "SecureString"
  key_id = local.kms_key_arn
  value  = random_password.worker.result
}

locals {
  # Apus's token file: "<sha256 hex of the token> <principal>" per line.
  token_file = join("\n", concat(
    [for p, _ in var.client_principals : "${sha256(random_password.client[p].result)} ${p}"],
    ["${sha256(random_password.worker.result)} worker"],
  ))
}
