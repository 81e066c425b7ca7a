locals {
  frontend_ip = cidrhost(cidrsubnet(var.vnet_cidr, 8, 1), 10)
}

# An internal Standard Load Balancer, TCP pass-through: TLS ends at Apus itself, so gRPC
# (HTTP/2 with trailers) reaches it untouched and client certificates (mTLS) still work. An
# Application Gateway would terminate TLS, needs its own certificate and HTTP/2 backend
# support, and would hide client certificates from Apus.
#   scheduler.<domain>:443  -> VM :50052 (scheduler: Bazel's --remote_executor)
#   cas.<domain>:50051      -> VM :50051 (CAS + action cache: workers, --remote_cache)
resource "azurerm_lb" "apus" {
  name                = "${var.name}-lb"
  location            = azurerm_resource_group.apus.location
  resource_group_name = azurerm_resource_group.apus.name
  sku                 = "Standard"
  tags                = var.tags

  frontend_ip_configuration {
    name                          = "grpc"
    subnet_id                     = azurerm_subnet.server.id
    private_ip_address_allocation = "Static"
    private_ip_address            = local.frontend_ip
    zones                         = ["1", "2", "3"]
  }
}

resource "azurerm_lb_backend_address_pool" "server" {
  name            = "server"
  loadbalancer_id = azurerm_lb.apus.id
}

resource "azurerm_network_interface_backend_address_pool_association" "server" {
  network_interface_id    = azurerm_network_interface.server.id
  ip_configuration_name   = "primary"
  backend_address_pool_id = azurerm_lb_backend_address_pool.server.id
}

resource "azurerm_lb_probe" "scheduler" {
  name            = "scheduler"
  loadbalancer_id = azurerm_lb.apus.id
  protocol        = "Tcp"
  port            = 50052
}

resource "azurerm_lb_probe" "cas" {
  name            = "cas"
  loadbalancer_id = azurerm_lb.apus.id
  protocol        = "Tcp"
  port            = 50051
}

resource "azurerm_lb_rule" "scheduler" {
  name                           = "scheduler-443"
  loadbalancer_id                = azurerm_lb.apus.id
  protocol                       = "Tcp"
  frontend_port                  = 443
  backend_port                   = 50052
  frontend_ip_configuration_name = "grpc"
  backend_address_pool_ids       = [azurerm_lb_backend_address_pool.server.id]
  probe_id                       = azurerm_lb_probe.scheduler.id
  idle_timeout_in_minutes        = 30
  enable_tcp_reset               = true
}

resource "azurerm_lb_rule" "cas" {
  name                           = "cas-50051"
  loadbalancer_id                = azurerm_lb.apus.id
  protocol                       = "Tcp"
  frontend_port                  = 50051
  backend_port                   = 50051
  frontend_ip_configuration_name = "grpc"
  backend_address_pool_ids       = [azurerm_lb_backend_address_pool.server.id]
  probe_id                       = azurerm_lb_probe.cas.id
  idle_timeout_in_minutes        = 30
  enable_tcp_reset               = true
}
