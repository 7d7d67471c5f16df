//! Authentication, access rules and TLS, the same for every protocol:
//! mosquitto tools, paho-mqtt, nats-py and redis-py against users with
//! argon2id hashes (made by `sandport passwd`), per-user topic rules with
//! `%u` and `%c`, anonymous clients, per-address backoff, and TLS with
//! certificates generated here (never committed).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use sandport_tests::mqtt::{RawClient, connect};
use sandport_tests::{TestBroker, converse, reference_server, run_tool, sandport_bin, workspace_root};
use tokio::io::AsyncWriteExt;

/// Hash `secret` with the real `sandport passwd`, as an operator would.
async fn passwd(secret: &str) -> String {
    let mut child = tokio::process::Command::new(sandport_bin())
        .arg("passwd")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("sandport passwd runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{secret}\n").as_bytes()).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    assert!(output.status.success(), "{output:?}");
    let hash = String::from_utf8(output.stdout).unwrap().trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    hash
}

/// Test certificates: a CA, a server certificate for 127.0.0.1/localhost,
/// and a client certificate with common name `alice`.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn generate() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "sandport test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.pem", ca_cert.pem());
        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        write("server.pem", server.signed_by(&server_key, &issuer).unwrap().pem());
        write("server.key", server_key.serialize_pem());
        let client_key = KeyPair::generate().unwrap();
        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        client.distinguished_name.push(DnType::CommonName, "alice");
        write("alice.pem", client.signed_by(&client_key, &issuer).unwrap().pem());
        write("alice.key", client_key.serialize_pem());
        Certs { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// The users, each hashed once per test process.
async fn users() -> &'static str {
    static USERS: OnceLock<String> = OnceLock::new();
    if let Some(users) = USERS.get() {
        return users;
    }
    let text = format!(
        r#"
        [[auth.users]]
        name = "alice"
        password_hash = "{}"
        publish = ["users/%u/#", "public/#"]
        subscribe = ["users/%u/#", "public/#"]
        [[auth.users]]
        name = "bob"
        password_hash = "{}"
        publish = ["users/%u/#", "public/#"]
        subscribe = ["users/%u/#", "public/#"]
        [[auth.users]]
        name = "dev"
        password_hash = "{}"
        publish = ["devices/%c/#"]
        subscribe = ["devices/%c/#"]
        [[auth.users]]
        name = "default"
        password_hash = "{}"
        [[auth.users]]
        name = "svc"
        token_hash = "{}"
        "#,
        passwd("wonderland").await,
        passwd("builder").await,
        passwd("devpass").await,
        passwd("hunter2").await,
        passwd("s3rvice-token").await,
    );
    USERS.get_or_init(|| text)
}

async fn config(certs: &Certs) -> String {
    format!(
        r#"
        [auth]
        max_failures = 3
        backoff_initial_ms = 1500
        backoff_max_ms = 3000
        [auth.anonymous]
        publish = ["public/#"]
        subscribe = ["public/#"]
        {users}

        [[listeners]]
        name = "mqtt"
        bind = "127.0.0.1:0"
        protocols = ["mqtt"]
        allow_anonymous = false

        [[listeners]]
        name = "mqtt-anon"
        bind = "127.0.0.1:0"
        protocols = ["mqtt"]

        [[listeners]]
        name = "mqtts"
        bind = "127.0.0.1:0"
        protocols = ["mqtt"]
        allow_anonymous = false
        [listeners.tls]
        cert = "{server}"
        key = "{key}"
        client_ca = "{ca}"

        [[listeners]]
        name = "mqtts-cert-only"
        bind = "127.0.0.1:0"
        protocols = ["mqtt"]
        allow_anonymous = false
        [listeners.tls]
        cert = "{server}"
        key = "{key}"
        client_ca = "{ca}"
        require_client_cert = true

        [[listeners]]
        name = "wss"
        bind = "127.0.0.1:0"
        protocols = ["mqtt"]
        transport = "websocket"
        allow_anonymous = false
        [listeners.tls]
        cert = "{server}"
        key = "{key}"

        [[listeners]]
        name = "nats"
        bind = "127.0.0.1:0"
        protocols = ["nats"]
        allow_anonymous = false

        [[listeners]]
        name = "resp"
        bind = "127.0.0.1:0"
        protocols = ["resp"]
        allow_anonymous = false

        [protocols.mqtt]
        component = "{{mqtt}}"
        [protocols.nats]
        component = "{{nats}}"
        [protocols.resp]
        component = "{{resp}}"
        "#,
        users = users().await,
        server = certs.path("server.pem"),
        key = certs.path("server.key"),
        ca = certs.path("ca.pem"),
    )
}

async fn start() -> (TestBroker, Certs) {
    let certs = Certs::generate();
    let broker = TestBroker::start(&config(&certs).await).await;
    (broker, certs)
}

/// Run `tests/python/auth_checks.py SCENARIO PORT [CERT_DIR]`.
async fn scenario(name: &str, port: u16, certs: Option<&Certs>) {
    let script = workspace_root().join("tests/python/auth_checks.py").display().to_string();
    let port = port.to_string();
    let mut args = vec![script.as_str(), name, &port];
    let dir = certs.map(|c| c.dir.path().display().to_string());
    if let Some(dir) = &dir {
        args.push(dir);
    }
    let (ok, stdout, stderr) = run_tool("python3", &args).await;
    assert!(ok && stdout.trim() == "ok", "scenario {name} failed:\n{stdout}\n{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_tools_with_user_names_and_passwords() {
    let (broker, _certs) = start().await;
    let port = broker.addr("mqtt").port().to_string();
    let common = ["-h", "127.0.0.1", "-p", &port];
    let sub = tokio::process::Command::new("mosquitto_sub")
        .args(common)
        .args(["-u", "alice", "-P", "wonderland", "-t", "users/alice/#", "-C", "1", "-W", "10", "-v"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    broker.wait_subscriptions(1).await;
    let publish = |user: &'static str, password: &'static str, topic: &'static str| {
        let port = port.clone();
        async move {
            run_tool(
                "mosquitto_pub",
                &[
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-u",
                    user,
                    "-P",
                    password,
                    "-t",
                    topic,
                    "-m",
                    "hi",
                    "-q",
                    "1",
                ],
            )
            .await
        }
    };
    let (ok, _, stderr) = publish("alice", "guess", "users/alice/x").await;
    assert!(!ok && stderr.to_lowercase().contains("not authori"), "{stderr}");
    let (ok, _, stderr) =
        run_tool("mosquitto_pub", &[&common[..], &["-t", "public/x", "-m", "anonymous"]].concat()).await;
    assert!(!ok && stderr.to_lowercase().contains("not authori"), "no anonymous clients here: {stderr}");
    let (ok, _, stderr) = publish("alice", "wonderland", "users/alice/x").await;
    assert!(ok, "{stderr}");
    let output =
        tokio::time::timeout(Duration::from_secs(10), sub.wait_with_output()).await.unwrap().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "users/alice/x hi");
    assert_eq!(broker.counter("mqtt", "auth_failures"), 2);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_outside_the_rules_is_refused_and_delivers_nothing() {
    let (broker, _certs) = start().await;
    scenario("mqtt_acl_v5", broker.addr("mqtt").port(), None).await;
    scenario("mqtt_acl_v311", broker.addr("mqtt").port(), None).await;
    scenario("mqtt_client_id_rules", broker.addr("mqtt").port(), None).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_anonymous_clients() {
    let (broker, _certs) = start().await;
    scenario("mqtt_refusals", broker.addr("mqtt").port(), None).await;
    scenario("mqtt_anonymous", broker.addr("mqtt-anon").port(), None).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_passwords_client_certificates_and_websocket() {
    let (broker, certs) = start().await;
    scenario("mqtt_tls_password", broker.addr("mqtts").port(), Some(&certs)).await;
    scenario("mqtt_tls_client_certificate", broker.addr("mqtts").port(), Some(&certs)).await;
    scenario("mqtt_tls_requires_certificate", broker.addr("mqtts-cert-only").port(), Some(&certs)).await;
    scenario("mqtt_tls_client_certificate", broker.addr("mqtts-cert-only").port(), Some(&certs)).await;
    scenario("mqtt_websocket_tls", broker.addr("wss").port(), Some(&certs)).await;
    // Debian's mosquitto tools over TLS, checking the server against the CA.
    let port = broker.addr("mqtts").port().to_string();
    let (ok, _, stderr) = run_tool(
        "mosquitto_pub",
        &[
            "-h",
            "localhost",
            "-p",
            &port,
            "--cafile",
            &certs.path("ca.pem"),
            "-u",
            "alice",
            "-P",
            "wonderland",
            "-t",
            "users/alice/tls",
            "-m",
            "x",
        ],
    )
    .await;
    assert!(ok, "{stderr}");
    let (ok, _, _) = run_tool(
        "mosquitto_pub",
        &[
            "-h",
            "localhost",
            "-p",
            &port,
            "-u",
            "alice",
            "-P",
            "wonderland",
            "-t",
            "users/alice/x",
            "-m",
            "x",
        ],
    )
    .await;
    assert!(!ok, "plain MQTT on a TLS listener must fail");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_and_redis_clients_authenticate_too() {
    let (broker, _certs) = start().await;
    scenario("nats_auth", broker.addr("nats").port(), None).await;
    scenario("redis_auth", broker.addr("resp").port(), None).await;
    broker.shutdown().await;
}

/// A NATS client refused by the access rules hears what nats-server says
/// to it: the `-ERR` alone, no `+OK` for the refused operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_permission_violations_are_answered_like_nats_server() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("nats.conf");
    std::fs::write(
        &config,
        r#"authorization { users = [ { user: alice, password: wonderland, permissions: {
            publish: ["users.alice.>", "public.>"], subscribe: ["users.alice.>", "public.>"] } } ] }"#,
    )
    .unwrap();
    let config = config.display().to_string();
    let (_reference, reference) =
        reference_server("nats-server", &["-c", &config, "-a", "127.0.0.1", "-p", "{port}"]).await;
    let (broker, _certs) = start().await;
    let writes: &[&[u8]] = &[
        b"CONNECT {\"verbose\":true,\"user\":\"alice\",\"pass\":\"wonderland\"}\r\n",
        b"PUB secret.x 1\r\nx\r\nSUB hidden 1\r\nSUB public.> 2\r\nPUB public.ok 1\r\ny\r\nPING\r\n",
    ];
    let expected = converse(reference, true, writes).await;
    assert!(expected.contains("Permissions Violation for Publish"), "{expected}");
    assert_eq!(converse(broker.addr("nats"), true, writes).await, expected);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_make_an_address_wait() {
    let (broker, _certs) = start().await;
    let addr = broker.addr("mqtt");
    let attempt = |password: &'static str| async move {
        let mut client = RawClient::connect(addr).await;
        let mut packet = connect("backoff", 60, true, None);
        // User name and password flags, then both strings.
        packet[9] |= 0xc0;
        let mut tail = Vec::new();
        for text in ["alice", password] {
            tail.extend_from_slice(&(text.len() as u16).to_be_bytes());
            tail.extend_from_slice(text.as_bytes());
        }
        packet[1] += tail.len() as u8;
        packet.extend_from_slice(&tail);
        client.send(&packet).await;
        client.read(4).await[3]
    };
    for _ in 0..3 {
        assert_eq!(attempt("guess").await, 5, "refused: not authorized");
    }
    assert_eq!(attempt("wonderland").await, 5, "blocked: even the right password waits");
    assert_eq!(broker.counter("mqtt", "auth_failures"), 3);
    assert_eq!(broker.counter("mqtt", "auth_blocked"), 1);
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_eq!(attempt("wonderland").await, 0, "accepted after the wait");
    broker.shutdown().await;
}

#[tokio::test]
async fn bad_auth_configs_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let check = |text: &str, expected: &str| {
        let error = sandport::Config::parse(text, Path::new("auth.toml"), PathBuf::from(dir.path()))
            .expect_err("invalid config");
        let message = error.to_string();
        assert!(message.contains(expected), "{message}");
    };
    let base =
        "[[listeners]]\nbind = \"127.0.0.1:0\"\nprotocols = [\"x\"]\n[protocols.x]\ncomponent = \"x.wasm\"\n";
    check(
        &format!("{base}[[auth.users]]\nname = \"a\"\npassword_hash = \"plain\"\n"),
        "auth.users[0].password_hash",
    );
    check(&format!("{base}[[auth.users]]\nname = \"a/b\"\n"), "auth.users[0].name");
    check(
        &format!("{base}[[auth.users]]\nname = \"a\"\npublish = [\"a/#/b\"]\n"),
        "auth.users[0].publish[0]",
    );
    check(&format!("{base}[auth]\nusers_file = \"missing.toml\"\n"), "missing.toml");
    std::fs::write(dir.path().join("users.toml"), "[[users]]\nname = \"a\"\npasword_hash = \"x\"\n").unwrap();
    check(&format!("{base}[auth]\nusers_file = \"users.toml\"\n"), "pasword_hash");
}
