"""voipsec's TOML configuration (voipsec.config)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from voipsec.config import (
    DEFAULT_TOML,
    MAX_CONFIG_BYTES,
    MAX_EXPIRY_WARNING_DAYS,
    MAX_SESSION_TICKETS,
    MAX_UDP_BUFFER,
    MIN_UDP_BUFFER,
    AlertsSection,
    Config,
    ConfigError,
    Listen,
    get_key,
    load,
    parse_listen,
    set_key,
    validate,
)
from voipsec.config.checks import MAX_EMAIL_RECIPIENTS


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "voipsec.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


# -- defaults -------------------------------------------------------------------------


def test_config_defaults_are_secure() -> None:
    config = Config()
    assert config.sip.listen == ["tls:127.0.0.1:5061"]
    assert config.sip.listeners() == [Listen(transport="tls", host="127.0.0.1", port=5061)]
    assert config.auth.algorithms == ["SHA-256"]
    assert config.media.srtp == "required"
    assert config.media.srtp_offer == "savp"
    assert config.tls.min_version == "1.2"
    assert config.tls.session_tickets == 0  # issue 16: Jami loses a message after tickets
    assert config.turn.listen == ["udp:127.0.0.1:3478", "tcp:127.0.0.1:3478"]
    assert config.turn.allowed_peers == []


def test_config_default_file_equals_defaults(tmp_path: Path) -> None:
    assert load(_write(tmp_path, DEFAULT_TOML)) == Config()


def test_config_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load(_write(tmp_path, "")) == Config()


def test_config_values_are_read(tmp_path: Path) -> None:
    config = load(
        _write(
            tmp_path,
            '[sip]\ndomain = "PBX.Example.ORG"\nlisten = ["udp:[::1]:5060"]\n'
            '[auth]\nalgorithms = ["SHA-256", "MD5"]\n',
        )
    )
    assert config.sip.domain == "pbx.example.org"
    assert config.sip.listeners() == [Listen(transport="udp", host="::1", port=5060)]
    assert config.auth.algorithms == ["SHA-256", "MD5"]


# -- problems -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listen", "problem"),
    [
        ("tcp:localhost:5060", "'tcp:localhost:5060': host must be an IP address"),
        ("tls:127.0.0.1:0", "'tls:127.0.0.1:0': port must be 1-65535"),
        ("tls:127.0.0.1:65536", "'tls:127.0.0.1:65536': port must be 1-65535"),
        ("tls:127.0.0.1", "'tls:127.0.0.1': host must be an IP address"),
        (
            "sctp:127.0.0.1:5060",
            "'sctp:127.0.0.1:5060': transport must be one of tls, tcp, udp, wss",
        ),
    ],
)
def test_config_bad_listen_is_one_exact_line(tmp_path: Path, listen: str, problem: str) -> None:
    path = _write(tmp_path, f'[sip]\nlisten = ["{listen}"]\n')
    # The whole list is validated at once, so the line names sip.listen (not
    # sip.listen.0): see the report on config.py.
    assert _problems(path) == [f"{path}: sip.listen: {problem}"]


def test_config_empty_listen(tmp_path: Path) -> None:
    path = _write(tmp_path, "[sip]\nlisten = []\n")
    assert _problems(path) == [f"{path}: sip.listen: at least one listen address is required"]


def test_config_every_problem_is_reported(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[sip]\ndomain = "a b"\n[tls]\nmin_version = "1.1"\n'
        '[auth]\nalgorithms = ["SHA-1"]\n[media]\nports = "10-5"\n',
    )
    assert _problems(path) == [
        f"{path}: sip.domain: 'a b' is not a host name",
        f"{path}: tls.min_version: Input should be '1.2' or '1.3'",
        f"{path}: auth.algorithms.0: Input should be 'SHA-256' or 'MD5'",
        f"{path}: media.ports: '10-5': expected LOW-HIGH with 1024 <= LOW < HIGH <= 65535",
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            '[media]\nsrtp = "maybe"\n',
            "media.srtp: Input should be 'required', 'optional' or 'off'",
        ),
        (
            '[media]\nsrtp_offer = "avp"\n',
            "media.srtp_offer: Input should be 'savp' or 'avp-crypto'",
        ),
        ("[tls]\nhandshake_timeout = 0\n", "tls.handshake_timeout: Input should be greater than 0"),
        (
            f"[tls]\nsession_tickets = {MAX_SESSION_TICKETS + 1}\n",
            f"tls.session_tickets: Input should be less than or equal to {MAX_SESSION_TICKETS}",
        ),
        (
            "[tls]\nsession_tickets = -1\n",
            "tls.session_tickets: Input should be greater than or equal to 0",
        ),
        (
            "[pki]\nexpiry_warning_days = 0\n",
            "pki.expiry_warning_days: Input should be greater than or equal to 1",
        ),
        (
            f"[pki]\nexpiry_warning_days = {MAX_EXPIRY_WARNING_DAYS + 1}\n",
            "pki.expiry_warning_days: Input should be less than or equal to 365",
        ),
        ("[auth]\nalgorithms = []\n", "auth.algorithms: at least one algorithm is required"),
        (
            "[auth]\nnonce_lifetime = 5\n",
            ("auth.nonce_lifetime: Input should be greater than or equal to 10"),
        ),
        ('[turn]\nallowed_peers = ["x"]\n', "turn.allowed_peers: 'x' is not a CIDR"),
        (
            '[registrar]\nmin_expires = "a"\n',
            (
                "registrar.min_expires: Input should be a valid integer, unable to parse string as "
                "an integer"
            ),
        ),
        (
            '[log]\nlevel = "trace"\n',
            ("log.level: Input should be 'debug', 'info', 'warning' or 'error'"),
        ),
        ("[cdr]\nmax_pending = 0\n", "cdr.max_pending: Input should be greater than or equal to 1"),
        (
            "[cdr]\nmax_pending = 10000001\n",
            "cdr.max_pending: Input should be less than or equal to 10000000",
        ),
        (
            f"[sip]\nudp_buffer = {MIN_UDP_BUFFER - 1}\n",
            "sip.udp_buffer: Input should be greater than or equal to 131072",
        ),
        (
            f"[sip]\nudp_buffer = {MAX_UDP_BUFFER + 1}\n",
            "sip.udp_buffer: Input should be less than or equal to 268435456",
        ),
    ],
)
def test_config_bad_value_is_one_exact_line(tmp_path: Path, text: str, problem: str) -> None:
    path = _write(tmp_path, text)
    assert _problems(path) == [f"{path}: {problem}"]


def test_config_unknown_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "[sip]\nbogus = 1\n")
    assert _problems(path) == [f"{path}: sip.bogus: unknown key"]


def test_config_unknown_section(tmp_path: Path) -> None:
    path = _write(tmp_path, "[nonsense]\nx = 1\n")
    assert _problems(path) == [f"{path}: nonsense: unknown key"]


def test_config_invalid_toml(tmp_path: Path) -> None:
    path = _write(tmp_path, "[sip\n")
    assert _problems(path) == [
        f"{path}: not valid TOML: Expected ']' at the end of a table declaration "
        "(at line 1, column 5)"
    ]


def test_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    assert _problems(path) == [f"{path}: file not found (run `voipsec init`)"]


def test_config_unreadable_file(tmp_path: Path) -> None:
    assert _problems(tmp_path) == [f"{tmp_path}: cannot read: Is a directory"]


def test_config_validate_names_the_path() -> None:
    with pytest.raises(ConfigError) as info:
        validate({"sip": {"listen": "tls:127.0.0.1:5061"}}, Path("x.toml"))
    assert info.value.problems == ["x.toml: sip.listen: Input should be a valid list"]


# -- parse_listen ---------------------------------------------------------------------


def test_config_parse_listen_ipv6_round_trip() -> None:
    listen = parse_listen("udp:[::1]:5060")
    assert listen == Listen(transport="udp", host="::1", port=5060)
    assert str(listen) == "udp:[::1]:5060"
    assert str(parse_listen("tls:192.0.2.1:5061")) == "tls:192.0.2.1:5061"


# -- get_key / set_key ----------------------------------------------------------------


def test_config_get_key_returns_effective_value(tmp_path: Path) -> None:
    path = _write(tmp_path, '[sip]\ndomain = "example.org"\n')
    assert get_key(path, "sip.domain") == "example.org"
    assert get_key(path, "registrar.max_contacts_per_aor") == 10  # default, not in file


def test_config_get_key_unknown(tmp_path: Path) -> None:
    path = _write(tmp_path, DEFAULT_TOML)
    with pytest.raises(ConfigError) as info:
        get_key(path, "sip.nope")
    assert info.value.problems == [f"{path}: sip.nope: unknown key"]


def test_config_set_key_keeps_comments(tmp_path: Path) -> None:
    path = _write(tmp_path, DEFAULT_TOML)
    set_key(path, "sip.domain", '"example.org"')
    text = path.read_text(encoding="utf-8")
    assert text == DEFAULT_TOML.replace('domain = "localhost"', 'domain = "example.org"')
    assert load(path).sip.domain == "example.org"


def test_config_set_key_list_value(tmp_path: Path) -> None:
    path = _write(tmp_path, DEFAULT_TOML)
    set_key(path, "sip.listen", '["tls:127.0.0.1:5061", "udp:127.0.0.1:5060"]')
    assert load(path).sip.listen == ["tls:127.0.0.1:5061", "udp:127.0.0.1:5060"]
    assert "# Where SIP listens." in path.read_text(encoding="utf-8")


def test_config_set_key_adds_missing_section(tmp_path: Path) -> None:
    path = _write(tmp_path, "# mine\n")
    set_key(path, "log.level", '"debug"')
    assert load(path).log.level == "debug"
    assert path.read_text(encoding="utf-8").startswith("# mine\n")
    assert tomllib.loads(path.read_text(encoding="utf-8")) == {"log": {"level": "debug"}}


@pytest.mark.parametrize(
    ("key", "literal", "problem"),
    [
        ("media.srtp", '"maybe"', "media.srtp: Input should be 'required', 'optional' or 'off'"),
        (
            "media.allowed_peers",
            '["10.0.0.0/33"]',
            "media.allowed_peers: '10.0.0.0/33' is not a CIDR",
        ),
        (
            "sip.listen",
            '["tcp:localhost:5060"]',
            ("sip.listen: 'tcp:localhost:5060': host must be an IP address"),
        ),
        ("sip.nope", "1", "sip.nope: unknown key"),
        (
            "sip.domain",
            "example.org",
            ("sip.domain: 'example.org' is not a TOML literal (quote strings)"),
        ),
        ("sip", "1", "sip: expected SECTION.KEY"),
        ("a.b.c", "1", "a.b.c: expected SECTION.KEY"),
    ],
)
def test_config_set_key_refuses_without_writing(
    tmp_path: Path, key: str, literal: str, problem: str
) -> None:
    path = _write(tmp_path, DEFAULT_TOML)
    with pytest.raises(ConfigError) as info:
        set_key(path, key, literal)
    assert info.value.problems == [f"{path}: {problem}"]
    assert path.read_text(encoding="utf-8") == DEFAULT_TOML


_TRUNK = """
[[trunks]]
name = "carrier"
address = "tls:127.0.0.1:5071"
domain = "trunk.test"
username = "acct"
password = "trunk-secret"
prefixes = ["+"]
"""


def test_a_config_with_trunk_passwords_must_be_private(tmp_path: Path) -> None:
    path = _write(tmp_path, _TRUNK)
    path.chmod(0o644)
    assert _problems(path) == [
        f"{path}: holds trunk passwords but others may read it (run: chmod 600 {path})"
    ]
    path.chmod(0o600)
    assert load(path).trunks[0].name == "carrier"


def test_trunk_password_never_appears_in_the_config_repr(tmp_path: Path) -> None:
    path = _write(tmp_path, _TRUNK)
    path.chmod(0o600)
    assert "trunk-secret" not in repr(load(path))


def test_trunks_must_be_reached_over_tls(tmp_path: Path) -> None:
    path = _write(tmp_path, _TRUNK.replace("tls:127.0.0.1:5071", "udp:127.0.0.1:5071"))
    path.chmod(0o600)
    (problem,) = _problems(path)
    assert "trunks are reached over TLS only" in problem


def test_set_key_leaves_the_file_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = _write(tmp_path, "")
    path.chmod(0o644)
    set_key(path, "calls.ring_timeout", "30")
    assert path.stat().st_mode & 0o777 == 0o600


def test_set_key_replaces_a_whole_array_of_tables(tmp_path: Path) -> None:
    path = _write(tmp_path, DEFAULT_TOML)
    set_key(
        path,
        "trunks",
        '[{name = "carrier", address = "tls:127.0.0.1:5071", domain = "trunk.test", '
        'prefixes = ["+44"]}]',
    )
    config = load(path)
    assert [(t.name, t.prefixes) for t in config.trunks] == [("carrier", ["+44"])]
    set_key(path, "trunks", "[]")
    assert load(path).trunks == []
    assert [z.name for z in load(path).zones] == ["loopback", "internet"]


def test_set_key_array_of_tables_is_validated(tmp_path: Path) -> None:
    path = _write(tmp_path, DEFAULT_TOML)
    with pytest.raises(ConfigError) as info:
        set_key(path, "trunks", '[{name = "x", address = "udp:127.0.0.1:5", domain = "d"}]')
    assert "trunks are reached over TLS only" in str(info.value)
    with pytest.raises(ConfigError) as info:
        set_key(path, "zones", '"internet"')
    assert str(info.value) == (f"{path}: zones: expected an array of tables, e.g. [{{name = ...}}]")
    assert load(path).trunks == []


@pytest.mark.parametrize(
    ("text", "what"),
    [
        (
            '[cdr]\nurl = "postgresql://voipsec:s3cret@127.0.0.1:5432/cdr"\n',
            "a CDR database password",
        ),
        ('[hep]\ntarget = "udp:127.0.0.1:9060"\nauth_key = "hep-key"\n', "a HEP auth key"),
        ('[metrics]\ntoken = "metrics-token"\n', "a metrics token"),
        (
            '[alerts]\nemail_to = ["soc@example.org"]\nemail_from = "v@example.org"\n'
            'smtp = "mail.example.org"\nsmtp_user = "v"\nsmtp_password = "smtp-pw"\n',
            "an SMTP password",
        ),
    ],
)
def test_other_secrets_also_require_a_private_file(tmp_path: Path, text: str, what: str) -> None:
    path = _write(tmp_path, text)
    path.chmod(0o640)
    assert _problems(path) == [
        f"{path}: holds {what} but others may read it (run: chmod 600 {path})"
    ]
    path.chmod(0o600)
    load(path)


# -- [alerts] e-mail ----------------------------------------------------------------

_EMAIL = (
    '[alerts]\nemail_to = ["soc@example.org", "oncall@example.org"]\n'
    'email_from = "voipsec@pbx.example.org"\nsmtp = "mail.example.org"\n'
)


def test_config_alert_email_is_off_by_default_and_starttls() -> None:
    alerts = Config().alerts
    assert (alerts.email_to, alerts.email_from, alerts.smtp) == ([], "", "")
    assert (alerts.smtp_tls, alerts.smtp_ca, alerts.smtp_user, alerts.smtp_password) == (
        "starttls",
        "",
        "",
        "",
    )


def test_config_alert_email_is_read(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        _EMAIL + 'smtp_tls = "implicit"\nsmtp_ca = "smtp-ca.crt"\n'
        'smtp_user = "voipsec"\nsmtp_password = "pw-1"\n',
    )
    path.chmod(0o600)
    alerts = load(path).alerts
    assert alerts == AlertsSection(
        email_to=["soc@example.org", "oncall@example.org"],
        email_from="voipsec@pbx.example.org",
        smtp="mail.example.org",
        smtp_tls="implicit",
        smtp_ca="smtp-ca.crt",
        smtp_user="voipsec",
        smtp_password="pw-1",
    )
    assert "pw-1" not in repr(load(path))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            '[alerts]\nemail_to = ["soc"]\n',
            "alerts.email_to: 'soc' is not an e-mail address (local@domain)",
        ),
        (
            '[alerts]\nemail_to = "soc@example.org"\n',
            "alerts.email_to: Input should be a valid list",
        ),
        (
            _EMAIL.replace('"oncall@example.org"', '"soc@example.org"'),
            "alerts.email_to: an address is listed twice",
        ),
        (
            _EMAIL.replace('email_from = "voipsec@pbx.example.org"', 'email_from = "Voipsec"'),
            "alerts.email_from: 'Voipsec' is not an e-mail address (local@domain)",
        ),
        (
            _EMAIL.replace('email_from = "voipsec@pbx.example.org"\n', ""),
            "alerts.email_from: required when email_to is set",
        ),
        (
            _EMAIL.replace('smtp = "mail.example.org"\n', ""),
            "alerts.smtp: required when email_to is set (HOST[:PORT])",
        ),
        (
            _EMAIL.replace("mail.example.org", "smtps://mail.example.org"),
            "alerts.smtp: 'smtps://mail.example.org': expected HOST[:PORT]",
        ),
        (
            _EMAIL.replace("mail.example.org", "mail.example.org:99999"),
            "alerts.smtp: 'mail.example.org:99999': port must be 1-65535",
        ),
        (
            _EMAIL + 'smtp_tls = "none"\n',
            "alerts.smtp_tls: Input should be 'starttls' or 'implicit'",
        ),
        (
            _EMAIL + 'smtp_tls = "plain"\n',
            "alerts.smtp_tls: Input should be 'starttls' or 'implicit'",
        ),
        (
            _EMAIL + 'smtp_user = "a b"\n',
            "alerts.smtp_user: must be printable ASCII without spaces",
        ),
    ],
)
def test_config_bad_alert_email_is_one_exact_line(tmp_path: Path, text: str, problem: str) -> None:
    path = _write(tmp_path, text)
    assert _problems(path) == [f"{path}: {problem}"]


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("secret-Pw1", "needs smtp_user"),
        ("secr\u00e9t-Pw1", "must be printable ASCII"),
        ("secret\\nPw1", "must be printable ASCII"),
    ],
)
def test_config_bad_smtp_password_is_never_repeated(
    tmp_path: Path, password: str, problem: str
) -> None:
    path = _write(tmp_path, _EMAIL + f'smtp_password = "{password}"\n')
    path.chmod(0o600)
    problems = _problems(path)
    assert problems == [f"{path}: alerts.smtp_password: {problem}"]
    assert "secr" not in "".join(problems)


def test_config_alert_email_over_max_recipients(tmp_path: Path) -> None:
    def recipients(count: int) -> str:
        return ", ".join(f'"u{i}@example.org"' for i in range(count))

    fits = _write(tmp_path, _EMAIL.replace(
        '"soc@example.org", "oncall@example.org"', recipients(MAX_EMAIL_RECIPIENTS)
    ))  # fmt: skip
    assert len(load(fits).alerts.email_to) == MAX_EMAIL_RECIPIENTS
    over = _write(tmp_path, _EMAIL.replace(
        '"soc@example.org", "oncall@example.org"', recipients(MAX_EMAIL_RECIPIENTS + 1)
    ))  # fmt: skip
    assert _problems(over) == [f"{over}: alerts.email_to: at most {MAX_EMAIL_RECIPIENTS} addresses"]


def test_config_set_alert_email_keys_one_at_a_time(tmp_path: Path) -> None:
    """email_to last: before email_from and smtp are set it is refused, file unchanged."""
    path = _write(tmp_path, DEFAULT_TOML)
    with pytest.raises(ConfigError) as info:
        set_key(path, "alerts.email_to", '["soc@example.org"]')
    assert info.value.problems == [
        f"{path}: alerts.email_from: required when email_to is set",
        f"{path}: alerts.smtp: required when email_to is set (HOST[:PORT])",
    ]
    assert path.read_text() == DEFAULT_TOML
    for key, value in [
        ("alerts.email_from", '"voipsec@pbx.example.org"'),
        ("alerts.smtp", '"mail.example.org:587"'),
        ("alerts.smtp_user", '"voipsec"'),
        ("alerts.smtp_password", '"pw-2"'),
        ("alerts.email_to", '["soc@example.org"]'),
    ]:
        set_key(path, key, value)
    alerts = load(path).alerts
    assert (alerts.email_to, alerts.smtp, alerts.smtp_password) == (
        ["soc@example.org"],
        "mail.example.org:587",
        "pw-2",
    )


def test_config_media_destinations_default_closed(tmp_path: Path) -> None:
    config = load(_write(tmp_path, DEFAULT_TOML))
    assert config.media.allowed_peers == []
    assert [z.media_in_zone for z in config.zones] == [False, False]
    path = _write(tmp_path, DEFAULT_TOML)
    set_key(path, "media.allowed_peers", '["10.1.0.0/16"]')
    assert load(path).media.allowed_peers == ["10.1.0.0/16"]


# -- /metrics beyond loopback (issue 13, finding 14) --------------------------------------


@pytest.mark.parametrize("listen", ["0.0.0.0:8443", "[::]:8443", "192.0.2.10:9443"])
def test_config_metrics_beyond_loopback_without_token_is_one_exact_line(
    tmp_path: Path, listen: str
) -> None:
    path = _write(tmp_path, f'[metrics]\nlisten = "{listen}"\n')
    assert _problems(path) == [
        f"{path}: metrics.allow_no_token: metrics.listen {listen} is not loopback: "
        "set metrics.token (or metrics.allow_no_token = true)"
    ]


@pytest.mark.parametrize(
    "text",
    [
        '[metrics]\nlisten = "0.0.0.0:8443"\ntoken = "metrics-token"\n',
        '[metrics]\nlisten = "0.0.0.0:8443"\nallow_no_token = true\n',
        '[metrics]\nlisten = "127.0.0.2:8443"\n',
        '[metrics]\nlisten = "[::1]:8443"\n',
        '[metrics]\nlisten = ""\n',
    ],
)
def test_config_metrics_token_or_loopback_or_explicit_opt_out_accepted(
    tmp_path: Path, text: str
) -> None:
    path = _write(tmp_path, text)
    path.chmod(0o600)  # the token is a secret
    assert load(path).metrics.listen in ("0.0.0.0:8443", "127.0.0.2:8443", "[::1]:8443", "")


def test_config_metrics_allow_no_token_default_off() -> None:
    assert Config().metrics.allow_no_token is False


def test_config_wss_listener_refused_beside_required_client_certificates(tmp_path: Path) -> None:
    """Security review, issue 17: a wss listener asks for no client certificate, so
    with tls.client_cert = "required" it would let devices in without one."""
    path = _write(
        tmp_path,
        '[sip]\nlisten = ["tls:127.0.0.1:5061", "wss:127.0.0.1:8443"]\n'
        '[tls]\nclient_cert = "required"\n',
    )
    assert _problems(path) == [
        f"{path}: (top level): sip.listen: wss:127.0.0.1:8443 takes no client certificate, "
        'which tls.client_cert = "required" demands of every device: remove the wss '
        "listener or relax tls.client_cert"
    ]
    path.write_text('[sip]\nlisten = ["tls:127.0.0.1:5061", "wss:127.0.0.1:8443"]\n')
    assert load(path).sip.listeners()[1].transport == "wss"


def test_config_load_refuses_a_device_a_fifo_and_a_file_over_the_limit(tmp_path: Path) -> None:
    reason = f"not a regular file of at most {MAX_CONFIG_BYTES} bytes"
    zero = tmp_path / "zero.toml"
    zero.symlink_to("/dev/zero")
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (MAX_CONFIG_BYTES + 1))
    for path in (zero, fifo, big):
        with pytest.raises(ConfigError) as info:
            load(path)
        assert info.value.problems == [f"{path}: {reason}"]
    fits = tmp_path / "fits.toml"
    fits.write_bytes(b"#" * MAX_CONFIG_BYTES)
    fits.chmod(0o600)
    assert load(fits) == load(fits)
