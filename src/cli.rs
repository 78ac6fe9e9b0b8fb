//! The command line, flag for flag as upstream (short options), plus long forms for what
//! upstream hard-codes. Only raw values live here; `config` resolves them once.
//!
//! On/off options are also switched on by their `SENTRYPEER_*` variable being set to any value
//! (even `0`), as upstream documents; `config` reads those, since clap would parse the value.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Default, Parser)]
#[command(
    name = "sentrypeer",
    version,
    about = "SIP honeypot and fraud-detection node: records the IP addresses and numbers VoIP attackers use",
    long_about = None,
    disable_version_flag = true,
    after_help = "On/off options are also switched on when their SENTRYPEER_* variable is set, to any value.\nPrecedence: flag > environment > config file > default."
)]
pub struct Cli {
    /// SQLite database file [default: ./sentrypeer.db]
    #[arg(
        short = 'f',
        long = "db-file",
        env = "SENTRYPEER_DB_FILE",
        value_name = "PATH",
        global = true
    )]
    pub db_file: Option<PathBuf>,

    /// Write the JSON log (env SENTRYPEER_JSON_LOG)
    #[arg(short = 'j', long = "json-log")]
    pub json_log: bool,

    /// JSON log file [default: ./sentrypeer_json.log]; implies -j
    #[arg(
        short = 'l',
        long = "json-log-file",
        env = "SENTRYPEER_JSON_LOG_FILE",
        value_name = "PATH"
    )]
    pub json_log_file: Option<PathBuf>,

    /// Share bad actors with peers and receive theirs (env SENTRYPEER_PEER_TO_PEER)
    #[arg(short = 'p', long = "peer-to-peer")]
    pub peer_to_peer: bool,

    /// Peer bootstrap node (repeatable): a host name or IP address (port 4222, QUIC and TCP),
    /// HOST:PORT, or a multiaddr; needs -p
    #[arg(
        short = 'b',
        long = "bootstrap-node",
        env = "SENTRYPEER_BOOTSTRAP_NODE",
        value_name = "HOST"
    )]
    pub bootstrap_node: Vec<String>,

    /// Peer-to-peer listen multiaddr (repeatable) [default: /ip4/0.0.0.0/udp/4222/quic-v1 and
    /// /ip4/0.0.0.0/tcp/4222; UDP 4223 for QUIC with --opendht on its default port]
    #[arg(
        long = "p2p-listen",
        env = "SENTRYPEER_P2P_LISTEN",
        value_name = "MULTIADDR",
        value_delimiter = ','
    )]
    pub p2p_listen: Vec<String>,

    /// Do not look for peers on the local network with mDNS (env SENTRYPEER_P2P_NO_MDNS)
    #[arg(long = "p2p-no-mdns")]
    pub p2p_no_mdns: bool,

    /// Accept peers' events (libp2p and OpenDHT) from private and loopback sources: labs and
    /// tests only (env SENTRYPEER_P2P_ALLOW_PRIVATE)
    #[arg(long = "p2p-allow-private")]
    pub p2p_allow_private: bool,

    /// Seconds a newly met peer is served before it must share events too [default: 21600]
    #[arg(long = "p2p-grace", env = "SENTRYPEER_P2P_GRACE", value_name = "SECS")]
    pub p2p_grace: Option<String>,

    /// A peer id always served, sharing or not (repeatable)
    #[arg(
        long = "p2p-trusted",
        env = "SENTRYPEER_P2P_TRUSTED",
        value_name = "PEERID",
        value_delimiter = ','
    )]
    pub p2p_trusted: Vec<String>,

    /// Inbound peer connections from one IPv4 address or IPv6 /64 at most, 1-1024 [default: 8]
    #[arg(
        long = "p2p-max-per-ip",
        env = "SENTRYPEER_P2P_MAX_PER_IP",
        value_name = "N"
    )]
    pub p2p_max_per_ip: Option<String>,

    /// Join upstream's OpenDHT network too: put this node's events under `bad_actors` and import
    /// upstream nodes' as unsigned reports (build feature `opendht`; env SENTRYPEER_OPENDHT)
    #[arg(long = "opendht")]
    pub opendht: bool,

    /// OpenDHT bootstrap node, HOST:PORT [default: bootstrap.sentrypeer.org:4222]
    #[arg(
        long = "opendht-bootstrap",
        env = "SENTRYPEER_OPENDHT_BOOTSTRAP",
        value_name = "HOST:PORT"
    )]
    pub opendht_bootstrap: Option<String>,

    /// UDP port of the OpenDHT node (IPv4 and IPv6; 0: any) [default: 4222, upstream's; with
    /// -p the QUIC listener then defaults to UDP 4223]
    #[arg(
        long = "opendht-port",
        env = "SENTRYPEER_OPENDHT_PORT",
        value_name = "PORT"
    )]
    pub opendht_port: Option<String>,

    /// Also put peers' events (libp2p) on OpenDHT, their author's node id kept (env
    /// SENTRYPEER_OPENDHT_BRIDGE)
    #[arg(long = "opendht-bridge")]
    pub opendht_bridge: bool,

    /// Peers whose reports list an address or number: distinct authors needed, 1-16 [default: 2]
    #[arg(
        long = "p2p-corroboration",
        env = "SENTRYPEER_P2P_CORROBORATION",
        value_name = "N"
    )]
    pub p2p_corroboration: Option<String>,

    /// How long an address or number stays a bad actor after it was last seen: 30s, 90m, 12h,
    /// 7d, or forever (upstream's all-time behaviour) [default: 7d]
    #[arg(
        long = "actor-ttl",
        env = "SENTRYPEER_ACTOR_TTL",
        value_name = "DURATION",
        global = true
    )]
    pub actor_ttl: Option<String>,

    /// An address or CIDR range that is never listed (repeatable; your trunks, your office)
    #[arg(
        long = "allow",
        env = "SENTRYPEER_ALLOW",
        value_name = "CIDR",
        value_delimiter = ',',
        global = true
    )]
    pub allow: Vec<String>,

    /// A file of addresses or CIDR ranges never listed, one per line (# comments); reread on SIGHUP
    #[arg(
        long = "allow-file",
        env = "SENTRYPEER_ALLOW_FILE",
        value_name = "PATH",
        global = true
    )]
    pub allow_file: Option<PathBuf>,

    /// A MaxMind-format .mmdb database of countries, and one of autonomous systems (repeatable),
    /// such as DB-IP's free IP-to-Country Lite and IP-to-ASN Lite: the analytics' countries and
    /// networks
    #[arg(
        long = "geoip-db",
        env = "SENTRYPEER_GEOIP_DB",
        value_name = "PATH",
        value_delimiter = ','
    )]
    pub geoip_db: Vec<String>,

    /// Fraud-check agent address, IP:PORT on UDP and TCP (repeatable): a SIP redirect server your
    /// PBX asks before each call (603 bad actor, 302 divert, 404 carry on)
    #[arg(
        long = "agent-listen",
        env = "SENTRYPEER_AGENT_LISTEN",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    pub agent_listen: Vec<String>,

    /// Who may ask the agent, CIDR (repeatable) [default: loopback]
    #[arg(
        long = "agent-allow",
        env = "SENTRYPEER_AGENT_ALLOW",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub agent_allow: Vec<String>,

    /// The header your PBX puts the caller's address in [default: X-Source-IP]
    #[arg(
        long = "agent-source-header",
        env = "SENTRYPEER_AGENT_SOURCE_HEADER",
        value_name = "NAME"
    )]
    pub agent_source_header: Option<String>,

    /// Divert bad calls to this SIP URI with 302 instead of declining them with 603
    #[arg(
        long = "agent-divert",
        env = "SENTRYPEER_AGENT_DIVERT",
        value_name = "URI"
    )]
    pub agent_divert: Option<String>,

    /// BGP neighbour to announce bad actors to, ADDR[:PORT] (repeatable; port 179 by default):
    /// connected to, and accepted from with --bgp-listen
    #[arg(
        long = "bgp-neighbor",
        env = "SENTRYPEER_BGP_NEIGHBOR",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    pub bgp_neighbor: Vec<String>,

    /// Accept BGP neighbours' connections here, ADDR[:PORT] [default: connect out only]
    #[arg(
        long = "bgp-listen",
        env = "SENTRYPEER_BGP_LISTEN",
        value_name = "ADDR"
    )]
    pub bgp_listen: Option<String>,

    /// Our AS number for BGP (4-octet numbers accepted)
    #[arg(
        long = "bgp-local-as",
        env = "SENTRYPEER_BGP_LOCAL_AS",
        value_name = "ASN"
    )]
    pub bgp_local_as: Option<String>,

    /// The neighbours' AS number (the same as ours for iBGP)
    #[arg(
        long = "bgp-peer-as",
        env = "SENTRYPEER_BGP_PEER_AS",
        value_name = "ASN"
    )]
    pub bgp_peer_as: Option<String>,

    /// BGP identifier, an IPv4 address [default: the IPv4 next hop]
    #[arg(
        long = "bgp-router-id",
        env = "SENTRYPEER_BGP_ROUTER_ID",
        value_name = "IPV4"
    )]
    pub bgp_router_id: Option<String>,

    /// Next hop of the announced routes: your routers' discard address, one IPv4 and/or one
    /// IPv6 (repeatable); required with --bgp-neighbor
    #[arg(
        long = "bgp-next-hop",
        env = "SENTRYPEER_BGP_NEXT_HOP",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    pub bgp_next_hop: Vec<String>,

    /// Community on every route, ASN:VALUE or large A:B:C (repeatable) [default: 65535:666
    /// (BLACKHOLE) and 65535:65281 (NO_EXPORT)]
    #[arg(
        long = "bgp-community",
        env = "SENTRYPEER_BGP_COMMUNITY",
        value_name = "COMMUNITY",
        value_delimiter = ','
    )]
    pub bgp_community: Vec<String>,

    /// Most routes announced; beyond it the listings ending soonest are held back [default: 100000]
    #[arg(
        long = "bgp-max-routes",
        env = "SENTRYPEER_BGP_MAX_ROUTES",
        value_name = "N"
    )]
    pub bgp_max_routes: Option<String>,

    /// A key APIBAN clients must send (repeatable); without one, any key is accepted
    #[arg(
        long = "apiban-key",
        env = "SENTRYPEER_APIBAN_KEY",
        value_name = "KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub apiban_key: Vec<String>,

    /// Delete recorded events older than this (30d, 12h...) [default: keep every event]
    #[arg(
        long = "retention",
        env = "SENTRYPEER_RETENTION",
        value_name = "DURATION"
    )]
    pub retention: Option<String>,

    /// Serve the REST API (env SENTRYPEER_API) [default address: 0.0.0.0:8082]
    #[arg(short = 'a', long = "api")]
    pub api: bool,

    /// Address for the REST API (repeatable); implies -a
    #[arg(long = "api-listen", value_name = "ADDR")]
    pub api_listen: Vec<String>,

    /// Serve the bad-actor set as an RFC 5782 DNS blocklist on this address, UDP and TCP
    /// (repeatable, IP:PORT); needs --dnsbl-zone
    #[arg(
        long = "dnsbl-listen",
        env = "SENTRYPEER_DNSBL_LISTEN",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    pub dnsbl_listen: Vec<String>,

    /// The DNS zone the blocklist answers for, such as bl.example.org
    #[arg(
        long = "dnsbl-zone",
        env = "SENTRYPEER_DNSBL_ZONE",
        value_name = "ZONE"
    )]
    pub dnsbl_zone: Option<String>,

    /// This name server's host name, as the parent zone delegates the blocklist to it (its NS
    /// and SOA records) [default: the zone's own name]
    #[arg(long = "dnsbl-ns", env = "SENTRYPEER_DNSBL_NS", value_name = "HOST")]
    pub dnsbl_ns: Option<String>,

    /// POST every event as JSON to this URL (env SENTRYPEER_WEBHOOK alone: http://localhost:4000/api/events)
    #[arg(
        short = 'w',
        long = "webhook-url",
        env = "SENTRYPEER_WEBHOOK_URL",
        value_name = "URL"
    )]
    pub webhook_url: Option<String>,

    /// OAuth 2 client-credentials id for the WebHook bearer token (no effect without a WebHook)
    #[arg(
        short = 'i',
        long = "oauth2-client-id",
        env = "SENTRYPEER_OAUTH2_CLIENT_ID",
        value_name = "ID"
    )]
    pub oauth2_client_id: Option<String>,

    /// OAuth 2 client secret (goes with -i)
    #[arg(
        short = 'c',
        long = "oauth2-client-secret",
        env = "SENTRYPEER_OAUTH2_CLIENT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub oauth2_client_secret: Option<String>,

    /// OAuth 2 token URL [default: https://authz.sentrypeer.com/oauth/token]
    #[arg(
        long = "oauth2-token-url",
        env = "SENTRYPEER_OAUTH2_TOKEN_URL",
        value_name = "URL"
    )]
    pub oauth2_token_url: Option<String>,

    /// OAuth 2 audience [default: https://sentrypeer.com/api]
    #[arg(
        long = "oauth2-audience",
        env = "SENTRYPEER_OAUTH2_AUDIENCE",
        value_name = "AUDIENCE"
    )]
    pub oauth2_audience: Option<String>,

    /// Events per WebHook request: 1 POSTs each event's object as upstream does; more POSTs a
    /// JSON array of up to N events [default: 1]
    #[arg(
        long = "webhook-batch",
        env = "SENTRYPEER_WEBHOOK_BATCH",
        value_name = "N"
    )]
    pub webhook_batch: Option<u64>,

    /// Events the WebHook outbox holds while the endpoint is failing; beyond it the oldest are
    /// dead-lettered [default: 100000]
    #[arg(
        long = "webhook-outbox-cap",
        env = "SENTRYPEER_WEBHOOK_OUTBOX_CAP",
        value_name = "N"
    )]
    pub webhook_outbox_cap: Option<u64>,

    /// Dead letters kept (refused events and those pushed out of a full outbox); beyond it the
    /// oldest are deleted [default: 100000]
    #[arg(
        long = "webhook-dead-letter-cap",
        env = "SENTRYPEER_WEBHOOK_DEAD_LETTER_CAP",
        value_name = "N"
    )]
    pub webhook_dead_letter_cap: Option<u64>,

    /// Longest pause between WebHook retries, in seconds (tests shorten it) [default: 300]
    #[arg(
        long = "webhook-max-backoff",
        env = "SENTRYPEER_WEBHOOK_MAX_BACKOFF",
        value_name = "SECONDS"
    )]
    pub webhook_max_backoff: Option<u64>,

    /// Answer SIP probes like a PBX (env SENTRYPEER_SIP_RESPONSIVE); otherwise passive
    #[arg(short = 'r', long = "sip-responsive")]
    pub sip_responsive: bool,

    /// No SIP listeners at all: API / peer node only (env SENTRYPEER_SIP_DISABLE)
    #[arg(short = 'R', long = "sip-disable")]
    pub sip_disable: bool,

    /// TLS certificate (PEM) [default: ./cert.pem; generated if it and the key are missing]
    #[arg(
        short = 't',
        long = "cert",
        env = "SENTRYPEER_CERT",
        value_name = "PATH"
    )]
    pub cert: Option<PathBuf>,

    /// TLS private key (PEM) [default: ./key.pem]
    #[arg(short = 'k', long = "key", env = "SENTRYPEER_KEY", value_name = "PATH")]
    pub key: Option<PathBuf>,

    /// SIP over TLS listen address (repeatable) [default: 0.0.0.0:5061 and [::]:5061]
    #[arg(
        short = 'z',
        long = "tls-listen",
        env = "SENTRYPEER_TLS_LISTEN_ADDRESS",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    pub tls_listen: Vec<String>,

    /// SIP over UDP listen address (repeatable) [default: 0.0.0.0:5060 and [::]:5060]
    #[arg(long = "udp-listen", value_name = "ADDR")]
    pub udp_listen: Vec<String>,

    /// SIP over TCP listen address (repeatable) [default: 0.0.0.0:5060 and [::]:5060]
    #[arg(long = "tcp-listen", value_name = "ADDR")]
    pub tcp_listen: Vec<String>,

    /// TOML config file, written with upstream's defaults if it does not exist [default:
    /// <config dir>/sentrypeer/default-config.toml, read only if it exists]
    #[arg(
        short = 'g',
        long = "config-file",
        env = "SENTRYPEER_CONFIG_FILE",
        value_name = "PATH",
        global = true
    )]
    pub config_file: Option<PathBuf>,

    /// Disable SIP over TLS (env SENTRYPEER_TLS_DISABLE)
    #[arg(short = 'N', long = "tls-disable")]
    pub tls_disable: bool,

    /// Write a syslog line per event, for fail2ban (env SENTRYPEER_SYSLOG)
    #[arg(short = 's', long = "syslog")]
    pub syslog: bool,

    /// Syslog socket [default: /dev/log]
    #[arg(
        long = "syslog-socket",
        env = "SENTRYPEER_SYSLOG_SOCKET",
        value_name = "PATH"
    )]
    pub syslog_socket: Option<PathBuf>,

    /// Block bad actors in the kernel: nftables table `inet sentrypeer` with timed sets and a
    /// chain that drops them (needs CAP_NET_ADMIN and nft) (env SENTRYPEER_NFTABLES)
    #[arg(long = "nftables")]
    pub nftables: bool,

    /// Fill the nftables sets only, for your own rules; no chain (env SENTRYPEER_NFTABLES_SET_ONLY)
    #[arg(long = "nftables-set-only")]
    pub nftables_set_only: bool,

    /// Fill ipset sets NAME and NAME6 with bad actors, for your own iptables rules (needs
    /// CAP_NET_ADMIN and ipset)
    #[arg(long = "ipset", env = "SENTRYPEER_IPSET", value_name = "NAME")]
    pub ipset: Option<String>,

    /// Server header in SIP replies [default: a common PBX's]
    #[arg(
        long = "server-header",
        env = "SENTRYPEER_SERVER_HEADER",
        value_name = "TEXT"
    )]
    pub server_header: Option<String>,

    /// Look like this product in SIP replies (with -r): its Server or User-Agent, realm, nonce
    /// format, Allow / Supported lists and reason phrases [default: the node's own FreePBX look]
    #[arg(
        long = "sip-persona",
        env = "SENTRYPEER_SIP_PERSONA",
        value_name = "NAME",
        value_parser = ["asterisk", "freepbx", "kamailio", "cisco", "yealink"]
    )]
    pub sip_persona: Option<String>,

    /// Fake success (with -r): accept a REGISTER (200 OK) after N refused attempts from one
    /// source, then answer its calls like a PBX (ring, answer, hang up; no media) so its
    /// dialled numbers are recorded
    #[arg(
        long = "sip-accept-register-after",
        env = "SENTRYPEER_SIP_ACCEPT_REGISTER_AFTER",
        value_name = "N"
    )]
    pub sip_accept_register_after: Option<String>,

    /// Passwords (one a line) whose use is recorded and, with -r, accepted at once as a
    /// successful REGISTER
    #[arg(
        long = "sip-trap-passwords",
        env = "SENTRYPEER_SIP_TRAP_PASSWORDS",
        value_name = "FILE"
    )]
    pub sip_trap_passwords: Option<PathBuf>,

    /// Verbose: one line per event on standard output (env SENTRYPEER_VERBOSE)
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,

    /// Debug logging (env SENTRYPEER_DEBUG)
    #[arg(short = 'd', long = "debug")]
    pub debug: bool,

    /// Print the version
    #[arg(short = 'V', long = "version", action = clap::ArgAction::Version)]
    pub version: Option<bool>,

    /// A one-shot command on the database instead of running the node.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Commands that work on the database (`-f`) and exit; with none, the node runs.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Inspect the WebHook's outbox and dead letters, and replay them
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// Print the man page (roff) to standard output: `sentrypeer man | man -l -`
    Man,
    /// Print a shell completion script: bash, zsh, fish, elvish or powershell
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Manage the kernel sets --nftables keeps
    #[command(subcommand)]
    Nftables(NftablesCommand),
    /// Write the listed bad actors to standard output (while the node runs or not)
    Export {
        /// plain, csv, json, ipset, nft, stix or misp (numbers: plain, csv, json, misp)
        #[arg(long, value_name = "FORMAT", default_value = "plain")]
        format: String,
        /// ip (addresses) or number
        #[arg(long = "type", value_name = "TYPE", default_value = "ip")]
        kind: String,
        /// local (seen by this node) or all (also corroborated peer reports)
        #[arg(long, value_name = "SCOPE", default_value = "all")]
        scope: String,
        /// Only what changed after this cursor (printed on standard error by each export)
        #[arg(long, value_name = "CURSOR")]
        since: Option<String>,
        /// ipset set name (IPv6: NAME6)
        #[arg(long, value_name = "NAME", default_value = "sentrypeer")]
        set: String,
    },
}

/// `sentrypeer nftables …`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum NftablesCommand {
    /// Delete the table `inet sentrypeer` (its sets and chain) that --nftables keeps
    Flush,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum WebhookCommand {
    /// Events waiting in the outbox and in the dead letters
    Status,
    /// List dead-lettered events, oldest first
    DeadLetters {
        /// Print one JSON object per line instead of a table
        #[arg(long)]
        json: bool,
        /// List at most this many
        #[arg(long, value_name = "N", default_value_t = 1000)]
        limit: usize,
    },
    /// Move dead-lettered events back to the outbox; a running node sends them within seconds
    Replay {
        /// Replay every dead letter
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Dead-letter ids, as `dead-letters` lists them
        #[arg(value_name = "ID", required_unless_present = "all")]
        ids: Vec<i64>,
    },
}
