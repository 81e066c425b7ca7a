/// Placeholder until the status page lands (being written on the `page` branch).
enum StatusPage {
  static let html = "<!doctype html><title>apus</title><p>status page</p>"
}
