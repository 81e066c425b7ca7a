/// When cached credentials are used as they are, renewed ahead of their expiry, or must be
/// fetched before a request can be signed. Pure, so the timing is tested without a clock.
///
/// Renewal starts `ahead` seconds before expiry (5 minutes, like the AWS SDKs), or halfway
/// through the lifetime of credentials that live less than twice that (test stand-ins
/// hand out keys valid for seconds), so a request never goes out with keys about to lapse.
struct CredentialsRefreshPolicy: Sendable {
  var ahead: Int64 = 300
  /// Keys this close to expiry are not used at all: the request would be signed with keys
  /// that lapse before S3 checks them (clock skew, a slow upload's first byte).
  var unusableWithin: Int64 = 10

  enum Decision: Equatable {
    /// No credentials, or expired ones: fetch, and wait for the result.
    case fetch
    /// Valid: use them; renew now as well (one caller does, the others go on).
    case renew
    /// Valid for a while yet.
    case use
  }

  /// `fetchedAt`, `now` and the expiration are seconds since the Unix epoch.
  func decide(_ cached: AWSCredentials?, fetchedAt: Int64, now: Int64) -> Decision {
    guard let cached else { return .fetch }
    guard let expiration = cached.expiration else { return .use }
    let lifetime = max(0, expiration - fetchedAt)
    let left = expiration - now
    if left <= min(unusableWithin, lifetime / 4) { return .fetch }
    return left <= min(ahead, lifetime / 2) ? .renew : .use
  }
}
