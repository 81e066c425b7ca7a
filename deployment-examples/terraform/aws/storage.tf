# The cache bucket: CAS blobs under cas/, action-cache entries under ac/.
#
# - No public access: all four public-access blocks on, bucket owner enforced (no ACLs),
#   and a bucket policy refusing plain-HTTP requests.
# - Encryption: SSE-KMS with the deployment's key and an S3 bucket key (one KMS call per
#   object per ~hour instead of one per request, which matters at cache request rates).
# - Versioning: off, on purpose. Every object is content-addressed and re-creatable (a CAS
#   blob is named by its hash; an AC entry is recomputed by running the action), action-cache
#   entries are overwritten often, and versioning would keep every overwritten and expired
#   object as a billed noncurrent version. Losing the bucket costs a cold cache, not data.
# - Expiry: a lifecycle rule deletes objects cache_expiry_days after they were written; the
#   completeness-checking action cache in Apus never serves a result whose outputs have
#   gone, so expiry is safe. Apus's own sweep (s3 max_seconds, by last use) is left off so
#   the instances need no bulk LIST/DELETE; use it instead of the rule if you prefer
#   "unused for N days" over "written N days ago".
# - Destroy policy: force_destroy = false by default, so `terraform destroy` stops at a
#   non-empty bucket. Empty it first (aws s3 rm --recursive) or set force_destroy = true
#   for throwaway deployments.

resource "aws_kms_key" "apus" {
  count                   = var.kms_key_arn == "" ? 1 : 0
  description             = "${var.name}: cache bucket, SSM parameters, EBS volumes, logs"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "apus" {
  count         = var.kms_key_arn == "" ? 1 : 0
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.apus[0].key_id
}

data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_109:A key policy's "*" resource is the key itself; the account-root statement is AWS's default key policy, delegating to IAM.
  #checkov:skip=CKV_AWS_111:A key policy's "*" resource is the key itself; writes are limited to the account, the Auto Scaling service-linked role and CloudWatch Logs.
  #checkov:skip=CKV_AWS_356:A key policy's "*" resource is the key itself (key policies cannot name other resources).
  # The account administers the key (the default key policy); IAM policies grant use.
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }

  # Auto Scaling launches workers with encrypted volumes through its service-linked role.
  statement {
    sid = "AutoScalingUsesKeyForVolumes"
    actions = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*",
    "kms:DescribeKey", "kms:CreateGrant"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"]
    }
  }

  # VPC flow logs are written to a log group encrypted with this key.
  statement {
    sid       = "CloudWatchLogsUsesKey"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }
  }
}

locals {
  kms_key_arn = var.kms_key_arn != "" ? var.kms_key_arn : aws_kms_key.apus[0].arn
}

resource "aws_s3_bucket" "cache" {
  #checkov:skip=CKV_AWS_21:Versioning off on purpose: content-addressed, re-creatable objects; AC overwrites would pile up as noncurrent versions (see the comment at the top).
  #checkov:skip=CKV_AWS_144:No cross-region replication: a lost region costs a cold cache, not data.
  #checkov:skip=CKV_AWS_18:No server access logging: every cache GET/PUT would be logged (a second bucket's worth of objects); CloudTrail data events can be enabled if needed.
  #checkov:skip=CKV2_AWS_62:No event notifications: nothing consumes bucket events.
  bucket_prefix = "${var.name}-cache-"
  force_destroy = var.force_destroy
}

resource "aws_s3_bucket_ownership_controls" "cache" {
  bucket = aws_s3_bucket.cache.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "cache" {
  bucket                  = aws_s3_bucket.cache.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "cache" {
  bucket = aws_s3_bucket.cache.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = local.kms_key_arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "cache" {
  bucket = aws_s3_bucket.cache.id

  rule {
    id     = "expire-cache-objects"
    status = "Enabled"
    filter {}
    expiration {
      days = var.cache_expiry_days
    }
    # Multipart uploads Apus aborted but S3 never heard about (a crash mid-upload).
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

data "aws_iam_policy_document" "cache_bucket" {
  statement {
    sid       = "DenyPlainHTTP"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.cache.arn, "${aws_s3_bucket.cache.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "cache" {
  bucket     = aws_s3_bucket.cache.id
  policy     = data.aws_iam_policy_document.cache_bucket.json
  depends_on = [aws_s3_bucket_public_access_block.cache]
}
