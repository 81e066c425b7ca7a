/// One place AWS credentials can come from (one link of the `auto` chain).
protocol CredentialsSource: Sendable {
  /// How the source is named in errors: `environment`, `container`, `instance metadata`.
  var name: String { get }
  /// The credentials and where exactly they came from (for the log: never a secret), or a
  /// `CredentialsError` saying why this source has none.
  func fetch() async throws -> (AWSCredentials, String)
}

/// Reads an environment variable; tests pass their own.
typealias EnvironmentLookup = @Sendable (String) -> String?

/// The keys written in the config (`credentials: static`).
struct StaticCredentialsSource: CredentialsSource {
  let credentials: AWSCredentials
  var name: String { "config" }
  func fetch() async throws -> (AWSCredentials, String) { (credentials, "the config's access_key_id") }
}

/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optional `AWS_SESSION_TOKEN`: read when
/// asked, and never expiring (the process environment does not change).
struct EnvironmentCredentialsSource: CredentialsSource {
  let environment: EnvironmentLookup
  var name: String { "environment" }

  func fetch() async throws -> (AWSCredentials, String) {
    let key = environment("AWS_ACCESS_KEY_ID") ?? ""
    let secret = environment("AWS_SECRET_ACCESS_KEY") ?? ""
    switch (key.isEmpty, secret.isEmpty) {
    case (true, true): throw CredentialsError("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set")
    case (true, false): throw CredentialsError("AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not")
    case (false, true): throw CredentialsError("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not")
    case (false, false): break
    }
    let token = environment("AWS_SESSION_TOKEN").flatMap { $0.isEmpty ? nil : $0 }
    return (AWSCredentials(accessKeyID: key, secretAccessKey: secret, sessionToken: token), "AWS_ACCESS_KEY_ID")
  }
}
