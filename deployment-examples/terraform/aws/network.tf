# Network: public subnets hold only the NLB and one NAT gateway; every instance is in a
# private subnet without a public IP. S3 traffic takes a gateway endpoint (free, and it
# keeps cache traffic off the NAT, which bills per GB); SSM and CloudWatch go through the
# NAT or, with enable_ssm_endpoints, interface endpoints.

data "aws_availability_zones" "available" {
  #checkov:skip=CKV_AWS_394:Only the first availability_zone_count zones are used (slice), and new zones get later letters, so a new zone does not change the set.
  state = "available"
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  azs             = slice(data.aws_availability_zones.available.names, 0, var.availability_zone_count)
  public_subnets  = [for i, _ in local.azs : cidrsubnet(var.vpc_cidr, 4, i)]
  private_subnets = [for i, _ in local.azs : cidrsubnet(var.vpc_cidr, 4, 8 + i)]
}

resource "aws_vpc" "main" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = { Name = var.name }
}

# The default security group allows nothing: every resource uses its own.
resource "aws_default_security_group" "default" {
  vpc_id = aws_vpc.main.id
}

resource "aws_internet_gateway" "main" {
  vpc_id = aws_vpc.main.id
  tags   = { Name = var.name }
}

resource "aws_subnet" "public" {
  count             = length(local.azs)
  vpc_id            = aws_vpc.main.id
  availability_zone = local.azs[count.index]
  cidr_block        = local.public_subnets[count.index]
  # No instance is launched here; the NAT gateway gets an Elastic IP of its own.
  map_public_ip_on_launch = false
  tags                    = { Name = "${var.name}-public-${local.azs[count.index]}" }
}

resource "aws_subnet" "private" {
  count                   = length(local.azs)
  vpc_id                  = aws_vpc.main.id
  availability_zone       = local.azs[count.index]
  cidr_block              = local.private_subnets[count.index]
  map_public_ip_on_launch = false
  tags                    = { Name = "${var.name}-private-${local.azs[count.index]}" }
}

resource "aws_eip" "nat" {
  domain = "vpc"
  tags   = { Name = "${var.name}-nat" }
}

# One NAT gateway (about 33 USD a month plus 0.045 USD/GB): instances reach the release URL,
# package mirrors and AWS APIs through it. One per AZ removes the single point of failure
# for outbound traffic at three times the price.
resource "aws_nat_gateway" "main" {
  allocation_id = aws_eip.nat.id
  subnet_id     = aws_subnet.public[0].id
  tags          = { Name = var.name }
  depends_on    = [aws_internet_gateway.main]
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.main.id
  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.main.id
  }
  tags = { Name = "${var.name}-public" }
}

resource "aws_route_table_association" "public" {
  count          = length(local.azs)
  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

resource "aws_route_table" "private" {
  vpc_id = aws_vpc.main.id
  route {
    cidr_block     = "0.0.0.0/0"
    nat_gateway_id = aws_nat_gateway.main.id
  }
  tags = { Name = "${var.name}-private" }
}

resource "aws_route_table_association" "private" {
  count          = length(local.azs)
  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private.id
}

resource "aws_vpc_endpoint" "s3" {
  vpc_id            = aws_vpc.main.id
  service_name      = "com.amazonaws.${var.region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = [aws_route_table.private.id]
  tags              = { Name = "${var.name}-s3" }
}

resource "aws_security_group" "endpoints" {
  count       = var.enable_ssm_endpoints ? 1 : 0
  name_prefix = "${var.name}-endpoints-"
  description = "Interface VPC endpoints: HTTPS from the instances"
  vpc_id      = aws_vpc.main.id

  ingress {
    description = "HTTPS from the VPC"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = [var.vpc_cidr]
  }
}

resource "aws_vpc_endpoint" "interface" {
  for_each            = var.enable_ssm_endpoints ? toset(["ssm", "ssmmessages", "ec2messages", "monitoring"]) : toset([])
  vpc_id              = aws_vpc.main.id
  service_name        = "com.amazonaws.${var.region}.${each.key}"
  vpc_endpoint_type   = "Interface"
  subnet_ids          = aws_subnet.private[*].id
  security_group_ids  = [aws_security_group.endpoints[0].id]
  private_dns_enabled = true
  tags                = { Name = "${var.name}-${each.key}" }
}

# Flow logs: rejected and accepted connections, for audits and for debugging security groups.
resource "aws_cloudwatch_log_group" "flow_logs" {
  name              = "/${var.name}/vpc-flow-logs"
  retention_in_days = var.log_retention_days
  kms_key_id        = local.kms_key_arn
}

data "aws_iam_policy_document" "flow_logs_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["vpc-flow-logs.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "flow_logs" {
  statement {
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.flow_logs.arn}:*"]
  }
}

resource "aws_iam_role" "flow_logs" {
  name_prefix        = "${var.name}-flow-logs-"
  assume_role_policy = data.aws_iam_policy_document.flow_logs_assume.json
}

resource "aws_iam_role_policy" "flow_logs" {
  role   = aws_iam_role.flow_logs.id
  policy = data.aws_iam_policy_document.flow_logs.json
}

resource "aws_flow_log" "main" {
  vpc_id          = aws_vpc.main.id
  traffic_type    = "ALL"
  log_destination = aws_cloudwatch_log_group.flow_logs.arn
  iam_role_arn    = aws_iam_role.flow_logs.arn
}

# Security groups. The public NLB has one (clients in allowed_client_cidrs on 443), the
# internal one for workers another (the workers on 50051); the scheduler hosts accept gRPC
# and the health checks on the admin port from those two NLBs only; the database accepts
# 5432 from the scheduler hosts only; workers accept nothing.
resource "aws_security_group" "nlb" {
  name_prefix = "${var.name}-nlb-"
  description = "NLB: TLS from allowed clients, to the scheduler"
  vpc_id      = aws_vpc.main.id

  ingress {
    description = "gRPC over TLS from allowed clients"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = var.allowed_client_cidrs
  }

  egress {
    description = "to Apus on the scheduler hosts (50051 TLS, 50052 plaintext)"
    from_port   = 50051
    to_port     = 50052
    protocol    = "tcp"
    cidr_blocks = local.private_subnets
  }

  egress {
    description = "health checks: /readyz on the scheduler hosts' admin port"
    from_port   = 9091
    to_port     = 9091
    protocol    = "tcp"
    cidr_blocks = local.private_subnets
  }
}

resource "aws_security_group" "worker_nlb" {
  name_prefix = "${var.name}-worker-nlb-"
  description = "Internal NLB: the workers' gRPC (TLS passthrough) to the scheduler hosts"
  vpc_id      = aws_vpc.main.id

  ingress {
    description     = "gRPC (TLS) from the workers"
    from_port       = 50051
    to_port         = 50051
    protocol        = "tcp"
    security_groups = [aws_security_group.worker.id]
  }

  egress {
    description = "to Apus's TLS listener on the scheduler hosts"
    from_port   = 50051
    to_port     = 50051
    protocol    = "tcp"
    cidr_blocks = local.private_subnets
  }

  egress {
    description = "health checks: /readyz on the scheduler hosts' admin port"
    from_port   = 9091
    to_port     = 9091
    protocol    = "tcp"
    cidr_blocks = local.private_subnets
  }
}

resource "aws_security_group" "scheduler" {
  #checkov:skip=CKV_AWS_24:Port 22 opens only with enable_ssh = true and only from ssh_cidrs, which may not contain 0.0.0.0/0 (variable validation).
  name_prefix = "${var.name}-scheduler-"
  description = "Apus scheduler hosts: gRPC and health checks from the two NLBs"
  vpc_id      = aws_vpc.main.id

  ingress {
    description     = "gRPC from the NLB and its health checks (50051 TLS or 50052 plaintext, see nlb_target_tls)"
    from_port       = var.nlb_target_tls ? 50051 : 50052
    to_port         = var.nlb_target_tls ? 50051 : 50052
    protocol        = "tcp"
    security_groups = [aws_security_group.nlb.id]
  }

  ingress {
    description     = "gRPC (TLS) from the workers through the internal NLB: WorkerAPI, CAS and action cache"
    from_port       = 50051
    to_port         = 50051
    protocol        = "tcp"
    security_groups = [aws_security_group.worker_nlb.id]
  }

  ingress {
    description     = "NLB health checks: GET /readyz on the admin listener"
    from_port       = 9091
    to_port         = 9091
    protocol        = "tcp"
    security_groups = [aws_security_group.nlb.id, aws_security_group.worker_nlb.id]
  }

  dynamic "ingress" {
    for_each = var.enable_ssh ? [1] : []
    content {
      description = "SSH (enable_ssh)"
      from_port   = 22
      to_port     = 22
      protocol    = "tcp"
      cidr_blocks = var.ssh_cidrs
    }
  }

  egress {
    description = "HTTPS: S3 (gateway endpoint), SSM, CloudWatch, release download"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  egress {
    description = "HTTP: Debian package mirrors"
    from_port   = 80
    to_port     = 80
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  # The database's own group admits only this group; a CIDR here avoids a reference cycle.
  dynamic "egress" {
    for_each = local.shared_state ? [1] : []
    content {
      description = "PostgreSQL (scheduler state) in the private subnets"
      from_port   = 5432
      to_port     = 5432
      protocol    = "tcp"
      cidr_blocks = local.private_subnets
    }
  }
}

resource "aws_security_group" "database" {
  count       = local.shared_state ? 1 : 0
  name_prefix = "${var.name}-state-"
  description = "Apus scheduler state (RDS PostgreSQL): 5432 from the scheduler hosts only"
  vpc_id      = aws_vpc.main.id

  ingress {
    description     = "PostgreSQL from the scheduler hosts"
    from_port       = 5432
    to_port         = 5432
    protocol        = "tcp"
    security_groups = [aws_security_group.scheduler.id]
  }
  # No egress rule: the database starts no connections.
}

resource "aws_security_group" "worker" {
  name_prefix = "${var.name}-worker-"
  description = "Apus workers: no inbound; outbound to the scheduler and HTTPS"
  vpc_id      = aws_vpc.main.id

  dynamic "ingress" {
    for_each = var.enable_ssh ? [1] : []
    content {
      description = "SSH (enable_ssh)"
      from_port   = 22
      to_port     = 22
      protocol    = "tcp"
      cidr_blocks = var.ssh_cidrs
    }
  }

  egress {
    description = "gRPC (TLS) to the scheduler hosts through the internal NLB"
    from_port   = 50051
    to_port     = 50051
    protocol    = "tcp"
    cidr_blocks = local.private_subnets
  }

  egress {
    description = "HTTPS: SSM, release download, anything actions fetch"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  egress {
    description = "HTTP: Debian package mirrors"
    from_port   = 80
    to_port     = 80
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}
