# Instance roles, least privilege:
# - scheduler (CAS + action cache + scheduler): Get/Put/Delete on cas/* and ac/* of the cache
#   bucket, List of the bucket limited to those prefixes, the KMS key for SSE-KMS, its own
#   TLS key parameter, the database password parameter (two or more schedulers),
#   PutMetricData in the Apus namespace only, and SSM Session Manager.
# - workers: no S3 at all (blobs go through the CAS), their token parameter, completing and
#   heartbeating lifecycle actions of their own group (scale-in draining), and SSM.
# Both may read the release tarball when it is an s3:// object.

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

locals {
  release_object_arn = (startswith(var.apus_release_url, "s3://")
    ? "arn:${data.aws_partition.current.partition}:s3:::${trimprefix(var.apus_release_url, "s3://")}"
  : "")
  ssm_core_policy = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

data "aws_iam_policy_document" "scheduler" {
  statement {
    sid       = "CacheObjects"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
    resources = ["${aws_s3_bucket.cache.arn}/cas/*", "${aws_s3_bucket.cache.arn}/ac/*"]
  }

  statement {
    sid       = "CacheList"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.cache.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["cas/*", "ac/*"]
    }
  }

  statement {
    sid       = "CacheEncryption"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [local.kms_key_arn]
  }

  statement {
    sid       = "TlsKey"
    actions   = ["ssm:GetParameter"]
    resources = [aws_ssm_parameter.scheduler_tls_key.arn]
  }

  # Shared state: the database password, read once at boot (decrypted with the key above).
  dynamic "statement" {
    for_each = local.shared_state ? [1] : []
    content {
      sid       = "DatabasePassword"
      actions   = ["ssm:GetParameter"]
      resources = [aws_ssm_parameter.database_password[0].arn]
    }
  }

  statement {
    sid       = "DesiredWorkersMetric"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"] # PutMetricData has no resource ARNs; the namespace condition limits it.
    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = ["Apus"]
    }
  }

  dynamic "statement" {
    for_each = local.release_object_arn != "" ? [1] : []
    content {
      sid       = "Release"
      actions   = ["s3:GetObject"]
      resources = [local.release_object_arn]
    }
  }
}

data "aws_iam_policy_document" "worker" {
  statement {
    sid       = "WorkerToken"
    actions   = ["ssm:GetParameter"]
    resources = [aws_ssm_parameter.worker_token.arn]
  }

  statement {
    sid       = "WorkerTokenDecrypt"
    actions   = ["kms:Decrypt"]
    resources = [local.kms_key_arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["ssm.${var.region}.amazonaws.com"]
    }
  }

  # apus-lifecycle: the worker completes its own termination once drained. Only these two
  # actions, only on the worker group (they support resource ARNs). A worker could complete
  # another worker's lifecycle action early (same group); the cost is that one's drain.
  statement {
    sid       = "ScaleInDrain"
    actions   = ["autoscaling:CompleteLifecycleAction", "autoscaling:RecordLifecycleActionHeartbeat"]
    resources = [aws_autoscaling_group.workers.arn]
  }

  dynamic "statement" {
    for_each = local.release_object_arn != "" ? [1] : []
    content {
      sid       = "Release"
      actions   = ["s3:GetObject"]
      resources = [local.release_object_arn]
    }
  }
}

resource "aws_iam_role" "scheduler" {
  name_prefix        = "${var.name}-scheduler-"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role_policy" "scheduler" {
  role   = aws_iam_role.scheduler.id
  policy = data.aws_iam_policy_document.scheduler.json
}

resource "aws_iam_role_policy_attachment" "scheduler_ssm" {
  role       = aws_iam_role.scheduler.name
  policy_arn = local.ssm_core_policy
}

resource "aws_iam_instance_profile" "scheduler" {
  name_prefix = "${var.name}-scheduler-"
  role        = aws_iam_role.scheduler.name
}

resource "aws_iam_role" "worker" {
  name_prefix        = "${var.name}-worker-"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role_policy" "worker" {
  role   = aws_iam_role.worker.id
  policy = data.aws_iam_policy_document.worker.json
}

resource "aws_iam_role_policy_attachment" "worker_ssm" {
  role       = aws_iam_role.worker.name
  policy_arn = local.ssm_core_policy
}

resource "aws_iam_instance_profile" "worker" {
  name_prefix = "${var.name}-worker-"
  role        = aws_iam_role.worker.name
}
