resource "azurerm_resource_group" "apus" {
  name     = "${var.name}-rg"
  location = var.location
  tags     = var.tags
}

resource "azurerm_virtual_network" "apus" {
  name                = "${var.name}-vnet"
  location            = azurerm_resource_group.apus.location
  resource_group_name = azurerm_resource_group.apus.name
  address_space       = [var.vnet_cidr]
  tags                = var.tags
}

# Private subnets: no VM has a public IP. Outbound (package mirrors, the apus download,
# Key Vault, Azure Monitor) goes through the NAT gateway below.
resource "azurerm_subnet" "server" {
  name                            = "server"
  resource_group_name             = azurerm_resource_group.apus.name
  virtual_network_name            = azurerm_virtual_network.apus.name
  address_prefixes                = [cidrsubnet(var.vnet_cidr, 8, 1)]
  service_endpoints               = ["Microsoft.KeyVault"]
  default_outbound_access_enabled = false
}

resource "azurerm_subnet" "workers" {
  name                            = "workers"
  resource_group_name             = azurerm_resource_group.apus.name
  virtual_network_name            = azurerm_virtual_network.apus.name
  address_prefixes                = [cidrsubnet(var.vnet_cidr, 4, 1)]
  service_endpoints               = ["Microsoft.KeyVault"]
  default_outbound_access_enabled = false
}

resource "azurerm_subnet" "bastion" {
  #checkov:skip=CKV2_AZURE_31:AzureBastionSubnet belongs to the managed Bastion service; an NSG there must carry Microsoft's fixed rule set (443 from Internet, GatewayManager, AzureLoadBalancer, 8080/5701 inside) or Bastion breaks, and Azure does not require one.
  count                = var.enable_bastion ? 1 : 0
  name                 = "AzureBastionSubnet"
  resource_group_name  = azurerm_resource_group.apus.name
  virtual_network_name = azurerm_virtual_network.apus.name
  address_prefixes     = [cidrsubnet(var.vnet_cidr, 10, 0)]
}

resource "azurerm_public_ip" "nat" {
  name                = "${var.name}-nat-ip"
  location            = azurerm_resource_group.apus.location
  resource_group_name = azurerm_resource_group.apus.name
  allocation_method   = "Static"
  sku                 = "Standard"
  zones               = ["1"]
  tags                = var.tags
}

resource "azurerm_nat_gateway" "apus" {
  name                = "${var.name}-nat"
  location            = azurerm_resource_group.apus.location
  resource_group_name = azurerm_resource_group.apus.name
  sku_name            = "Standard"
  zones               = ["1"]
  tags                = var.tags
}

resource "azurerm_nat_gateway_public_ip_association" "apus" {
  nat_gateway_id       = azurerm_nat_gateway.apus.id
  public_ip_address_id = azurerm_public_ip.nat.id
}

resource "azurerm_subnet_nat_gateway_association" "server" {
  subnet_id      = azurerm_subnet.server.id
  nat_gateway_id = azurerm_nat_gateway.apus.id
}

resource "azurerm_subnet_nat_gateway_association" "workers" {
  subnet_id      = azurerm_subnet.workers.id
  nat_gateway_id = azurerm_nat_gateway.apus.id
}

# NSGs: gRPC from the VNet and client_cidrs to the server; nothing inbound to workers but
# (optionally) SSH from the Bastion subnet. No rule opens SSH to the internet.
resource "azurerm_network_security_group" "server" {
  name                = "${var.name}-server-nsg"
  location            = azurerm_resource_group.apus.location
  resource_group_name = azurerm_resource_group.apus.name
  tags                = var.tags

  security_rule {
    name                       = "grpc-from-clients"
    priority                   = 100
    direction                  = "Inbound"
    access                     = "Allow"
    protocol                   = "Tcp"
    source_port_range          = "*"
    destination_port_ranges    = ["50051", "50052"]
    source_address_prefixes    = concat([var.vnet_cidr], var.client_cidrs)
    destination_address_prefix = "*"
  }

  security_rule {
    name                       = "lb-probes"
    priority                   = 110
    direction                  = "Inbound"
    access                     = "Allow"
    protocol                   = "Tcp"
    source_port_range          = "*"
    destination_port_ranges    = ["50051", "50052"]
    source_address_prefix      = "AzureLoadBalancer"
    destination_address_prefix = "*"
  }

  dynamic "security_rule" {
    for_each = var.enable_bastion ? [1] : []
    content {
      name                       = "ssh-from-bastion"
      priority                   = 200
      direction                  = "Inbound"
      access                     = "Allow"
      protocol                   = "Tcp"
      source_port_range          = "*"
      destination_port_range     = "22"
      source_address_prefix      = cidrsubnet(var.vnet_cidr, 10, 0)
      destination_address_prefix = "*"
    }
  }

  security_rule {
    name                       = "deny-other-inbound"
    priority                   = 4000
    direction                  = "Inbound"
    access                     = "Deny"
    protocol                   = "*"
    source_port_range          = "*"
    destination_port_range     = "*"
    source_address_prefix      = "*"
    destination_address_prefix = "*"
  }
}

resource "azurerm_network_security_group" "workers" {
  name                = "${var.name}-workers-nsg"
  location            = azurerm_resource_group.apus.location
  resource_group_name = azurerm_resource_group.apus.name
  tags                = var.tags

  dynamic "security_rule" {
    for_each = var.enable_bastion ? [1] : []
    content {
      name                       = "ssh-from-bastion"
      priority                   = 200
      direction                  = "Inbound"
      access                     = "Allow"
      protocol                   = "Tcp"
      source_port_range          = "*"
      destination_port_range     = "22"
      source_address_prefix      = cidrsubnet(var.vnet_cidr, 10, 0)
      destination_address_prefix = "*"
    }
  }

  security_rule {
    name                       = "deny-other-inbound"
    priority                   = 4000
    direction                  = "Inbound"
    access                     = "Deny"
    protocol                   = "*"
    source_port_range          = "*"
    destination_port_range     = "*"
    source_address_prefix      = "*"
    destination_address_prefix = "*"
  }
}

resource "azurerm_subnet_network_security_group_association" "server" {
  subnet_id                 = azurerm_subnet.server.id
  network_security_group_id = azurerm_network_security_group.server.id
}

resource "azurerm_subnet_network_security_group_association" "workers" {
  subnet_id                 = azurerm_subnet.workers.id
  network_security_group_id = azurerm_network_security_group.workers.id
}

resource "azurerm_public_ip" "bastion" {
  count               = var.enable_bastion ? 1 : 0
  name                = "${var.name}-bastion-ip"
  location            = azurerm_resource_group.apus.location
  resource_group_name = azurerm_resource_group.apus.name
  allocation_method   = "Static"
  sku                 = "Standard"
  tags                = var.tags
}

resource "azurerm_bastion_host" "apus" {
  count               = var.enable_bastion ? 1 : 0
  name                = "${var.name}-bastion"
  location            = azurerm_resource_group.apus.location
  resource_group_name = azurerm_resource_group.apus.name
  sku                 = "Standard"
  tunneling_enabled   = true
  tags                = var.tags

  ip_configuration {
    name                 = "bastion"
    subnet_id            = azurerm_subnet.bastion[0].id
    public_ip_address_id = azurerm_public_ip.bastion[0].id
  }
}

# Names: a private DNS zone linked to the VNet. scheduler.<domain> and cas.<domain> are the
# load balancer's frontend; clients outside the VNet resolve them through a DNS forwarder
# or Private Resolver on the VPN (or add them to the corporate DNS).
resource "azurerm_private_dns_zone" "apus" {
  name                = var.domain
  resource_group_name = azurerm_resource_group.apus.name
  tags                = var.tags
}

resource "azurerm_private_dns_zone_virtual_network_link" "apus" {
  name                  = "${var.name}-vnet"
  resource_group_name   = azurerm_resource_group.apus.name
  private_dns_zone_name = azurerm_private_dns_zone.apus.name
  virtual_network_id    = azurerm_virtual_network.apus.id
  tags                  = var.tags
}

resource "azurerm_private_dns_a_record" "scheduler" {
  name                = "scheduler"
  zone_name           = azurerm_private_dns_zone.apus.name
  resource_group_name = azurerm_resource_group.apus.name
  ttl                 = 300
  records             = [local.frontend_ip]
  tags                = var.tags
}

resource "azurerm_private_dns_a_record" "cas" {
  name                = "cas"
  zone_name           = azurerm_private_dns_zone.apus.name
  resource_group_name = azurerm_resource_group.apus.name
  ttl                 = 300
  records             = [local.frontend_ip]
  tags                = var.tags
}
