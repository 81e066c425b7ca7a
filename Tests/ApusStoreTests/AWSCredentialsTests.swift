import Testing

@testable import ApusStore

@Suite("AWS credentials documents", .timeLimit(.minutes(1)))
struct AWSCredentialsTests {
  static func parse(_ json: String) throws -> AWSCredentials { try AWSCredentials.parse(json: Array(json.utf8)) }

  @Test("an IMDS document: keys, token and expiration")
  func imds() throws {
    let c = try Self.parse(
      #"{"Code":"Success","LastUpdated":"2026-11-27T10:00:00Z","Type":"AWS-HMAC","AccessKeyId":"ASIAX","SecretAccessKey":"sek","Token":"tok","Expiration":"2026-11-27T16:00:00Z"}"#
    )
    #expect(c == AWSCredentials(accessKeyID: "ASIAX", secretAccessKey: "sek", sessionToken: "tok", expiration: 1_795_795_200))
  }

  @Test("a container document has no Code; no Expiration means keys that do not expire")
  func container() throws {
    let c = try Self.parse(#"{"AccessKeyId":"A","SecretAccessKey":"S","Token":""}"#)
    #expect(c == AWSCredentials(accessKeyID: "A", secretAccessKey: "S", sessionToken: nil, expiration: nil))
  }

  @Test("bad documents are errors that name the problem and no value", arguments: [
    ("not json", "the answer is not a JSON credentials document"),
    (#"{"Code":"AssumeRoleUnauthorizedAccess","AccessKeyId":"A","SecretAccessKey":"S"}"#,
     "the answer's Code is AssumeRoleUnauthorizedAccess"),
    (#"{"AccessKeyId":"A"}"#, "the answer has no AccessKeyId and SecretAccessKey"),
    (#"{"AccessKeyId":"A","SecretAccessKey":"S","Expiration":"tomorrow"}"#,
     #"the answer's Expiration "tomorrow" is not an ISO 8601 time"#),
  ])
  func bad(json: String, message: String) {
    #expect(throws: CredentialsError(message)) { try Self.parse(json) }
  }

  @Test("description never shows the secret or the token")
  func redacted() {
    let c = AWSCredentials(accessKeyID: "AKID", secretAccessKey: "sek", sessionToken: "tok", expiration: 5)
    #expect("\(c)" == "AWSCredentials(expiration: 5)")
  }

  @Test("the IMDS role listing: first line, checked", arguments: [
    ("apus-scheduler\n", "apus-scheduler"), ("role+a=b,c.d@e_f-g\nother\n", "role+a=b,c.d@e_f-g"),
    ("", nil), ("../etc\n", nil), ("a b\n", nil),
  ] as [(String, String?)])
  func roleName(body: String, name: String?) {
    #expect(InstanceMetadataCredentialsSource.roleName(Array(body.utf8)) == name)
  }

  @Test("container endpoints: relative on the ECS agent, full over https or to a local agent", arguments: [
    (["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/x"], "http://169.254.170.2/v2/credentials/x"),
    (["AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://127.0.0.1:9/creds"], "http://127.0.0.1:9/creds"),
    (["AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.170.23/v1/credentials"], "http://169.254.170.23/v1/credentials"),
    (["AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://[fd00:ec2::23]/v1"], "http://[fd00:ec2::23]/v1"),
    (["AWS_CONTAINER_CREDENTIALS_FULL_URI": "https://creds.example/x"], "https://creds.example/x"),
    (["AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://creds.example/x"],
     "AWS_CONTAINER_CREDENTIALS_FULL_URI http://creds.example/x: plain http only to a loopback or the ECS/EKS agent address"),
    (["AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://127.0.0.1.evil.example/x"],
     "AWS_CONTAINER_CREDENTIALS_FULL_URI http://127.0.0.1.evil.example/x: plain http only to a loopback or the ECS/EKS agent address"),
    ([:], "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and AWS_CONTAINER_CREDENTIALS_FULL_URI are not set"),
  ])
  func containerURL(environment: [String: String], expected: String) {
    let result: String
    do {
      result = try ContainerCredentialsSource.url { environment[$0] }
    } catch {
      result = "\(error)"
    }
    #expect(result == expected)
  }
}
