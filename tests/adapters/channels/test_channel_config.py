"""Channel settings (adapters/channels/config.py): the embedded default, `${ENV}` and Prefect
secret references, and one-line errors that never show a secret."""

from __future__ import annotations

import pytest

from adapters.channels import ChannelConfigError, mask, open_channel
from adapters.channels.config import load_channels


def test_without_a_file_messages_go_to_the_outbox_and_tasks_to_call_lists(tmp_path):
    channels = load_channels(None, outbox=tmp_path / "outbox")
    assert {name: (c["kind"], c["out"]) for name, c in channels.items()} == {
        **{n: ("file", str(tmp_path / "outbox")) for n in ("sms", "email", "im")},
        **{n: ("call_list", str(tmp_path / "call_lists")) for n in ("call", "visit")},
    }


def test_environment_references_are_resolved_and_paths_are_relative_to_the_file(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("SMS_TOKEN", "s3cret")
    path = tmp_path / "conf" / "channels.yml"
    path.parent.mkdir()
    path.write_text(
        'sms: {kind: http_json, url: "http://127.0.0.1:9/send", token: "${SMS_TOKEN}", '
        "rate_per_s: 200}\ncall: {kind: call_list, out: lists/}\n",
        encoding="utf-8",
    )
    channels = load_channels(path, outbox=tmp_path / "outbox")
    assert channels["sms"]["token"] == "s3cret"
    assert channels["call"]["out"] == str(tmp_path / "conf" / "lists")
    assert channels["email"]["kind"] == "file"  # not named: the embedded default
    channel = open_channel("sms", channels["sms"])  # rate_per_s is the dispatcher's
    assert channel.kind == "http_json"
    channel.close()


def test_a_missing_variable_is_one_line_naming_it(tmp_path, monkeypatch):
    monkeypatch.delenv("NO_SUCH_TOKEN", raising=False)
    path = tmp_path / "channels.yml"
    path.write_text('sms: {kind: http_json, url: "http://x/", token: "${NO_SUCH_TOKEN}"}\n')
    with pytest.raises(ChannelConfigError, match=r"channel sms: token needs the environment "
                                                  r"variable NO_SUCH_TOKEN$"):  # fmt: skip
        load_channels(path, outbox=tmp_path)


def test_an_unknown_kind_or_option_is_a_clear_error(tmp_path):
    path = tmp_path / "channels.yml"
    path.write_text("sms: {kind: carrier_pigeon}\n")
    with pytest.raises(ChannelConfigError, match="kind 'carrier_pigeon' is not one of"):
        load_channels(path, outbox=tmp_path)
    with pytest.raises(ChannelConfigError, match=r"channel sms \(file\):.*colour"):
        open_channel("sms", {"kind": "file", "out": str(tmp_path), "colour": "red"})


@pytest.mark.usefixtures("prefect_server")
def test_a_prefect_secret_block_is_read_by_name(tmp_path):
    from prefect.blocks.system import Secret

    Secret(value="from-the-block").save("sms-token", overwrite=True)
    path = tmp_path / "channels.yml"
    path.write_text('sms: {kind: http_json, url: "http://x/", token: "${secret:sms-token}"}\n')
    assert load_channels(path, outbox=tmp_path)["sms"]["token"] == "from-the-block"
    path.write_text('sms: {kind: http_json, url: "http://x/", token: "${secret:no-such}"}\n')
    with pytest.raises(ChannelConfigError, match="Prefect Secret block 'no-such'"):
        load_channels(path, outbox=tmp_path)


def test_phones_and_addresses_are_masked_anywhere_in_a_text():
    text = "to 13812345678, +8613912345678 and zhang.san@example.com; order 20261123000001"
    assert mask(text) == (
        "to 138****5678, +86139****5678 and z***@example.com; order 20261123000001"
    )


def test_phones_of_other_countries_are_masked_by_their_country_code():
    text = "请回电 +852 9123 4567 或 +1 (415) 555-2671，0044 20 7946 0958"
    assert mask(text) == "请回电 +852****4567 或 +1****2671，+44****0958"
    # not phones: order numbers, amounts, dates, a long id after 00
    plain = "order 20261123000001, -1234567.5 on 2026-11-23 10:00, id 0012345678901234567890"
    assert mask(plain) == plain
