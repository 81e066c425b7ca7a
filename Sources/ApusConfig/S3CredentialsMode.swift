/// Where an `s3` store gets the keys it signs with (key `credentials`).
///
/// `auto` is the AWS SDKs' default chain, so the same config runs on a laptop (environment),
/// in ECS/EKS (container credentials) and on EC2 (the instance role) without a helper that
/// writes keys into the environment.
public enum S3CredentialsMode: String, Sendable, Equatable, CaseIterable {
  /// `environment`, then `container`, then `instance`: the first that has credentials.
  case auto
  /// `access_key_id`, `secret_access_key` and `session_token` from the config.
  case `static`
  /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`.
  case environment
  /// `AWS_CONTAINER_CREDENTIALS_FULL_URI` or `_RELATIVE_URI` (ECS task role, EKS Pod Identity).
  case container
  /// The EC2 instance role through the instance metadata service (IMDSv2).
  case instance
}
