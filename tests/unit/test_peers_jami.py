"""The GVariant text reader of the Jami harness (tests/peers/jami.py), on what ``gdbus
call`` printed for jamid 13.7's answers."""

from __future__ import annotations

import pytest

from tests.peers.jami import gvariant_dict, gvariant_string, parse_gvariant


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("('ecb273b3fd2480b8',)\n", ("ecb273b3fd2480b8",)),
        ("(@as [],)\n", ([],)),
        ("(['alsa', 'pulseaudio'],)\n", (["alsa", "pulseaudio"],)),
        ("(true,)\n", (True,)),
        ("(uint32 5, int64 -7)\n", (5, -7)),
        (
            "({'Account.registrationCode': '200', 'TLS_PEER_CA_0': "
            "'-----BEGIN CERTIFICATE-----\\nMIIB\\n', 'q': \"it's\"},)\n",
            (
                {
                    "Account.registrationCode": "200",
                    "TLS_PEER_CA_0": "-----BEGIN CERTIFICATE-----\nMIIB\n",
                    "q": "it's",
                },
            ),
        ),
    ],
)
def test_peers_jami_parse_gvariant(text: str, value: object) -> None:
    assert parse_gvariant(text) == value


def test_peers_jami_gvariant_arguments_round_trip() -> None:
    details = {"TLS.certificateListFile": "/tmp/a b/ca.crt", "Account.password": "it's\\x"}
    assert parse_gvariant(gvariant_dict(details)) == details
    assert parse_gvariant(gvariant_string("o'k")) == "o'k"
    assert gvariant_dict({}) == "@a{ss} {}"
    assert parse_gvariant(gvariant_dict({})) == {}
