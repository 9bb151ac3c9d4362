"""Configuration refuses what it does not know: a typo must not leave a
setting silently at its default."""

import pytest

from fallback.config import DEFAULTS, ConfigError, load_config, render_toml


def write(tmp_path, text):
    path = tmp_path / "sonae.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_known_keys_are_read(tmp_path):
    config = load_config(write(tmp_path, '[counter]\nkill_switch_hours = { inkan = 48 }\nmax_copies = 5\n'), env={})
    assert config["counter"]["kill_switch_hours"] == {"inkan": 48} and config["counter"]["max_copies"] == 5


def test_a_misspelt_key_is_refused_with_the_nearest_known_one(tmp_path):
    with pytest.raises(ConfigError, match=r"\[counter\] has no key 'kill_switch_hour'; did you mean kill_switch_hours\?"):
        load_config(write(tmp_path, '[counter]\nkill_switch_hour = { inkan = 48 }\n'), env={})


def test_an_unknown_section_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown section \[counters\]; did you mean counter\?"):
        load_config(write(tmp_path, '[counters]\nmax_copies = 5\n'), env={})


def test_an_unknown_key_far_from_any_lists_the_known_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"has no key 'colour'; known: printer, "):
        load_config(write(tmp_path, '[printing]\ncolour = "red"\n'), env={})


def test_a_wrong_type_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"counter.max_copies must be a whole number, not '5'"):
        load_config(write(tmp_path, '[counter]\nmax_copies = "5"\n'), env={})
    with pytest.raises(ConfigError, match=r"counter.third_party_during_downtime must be true or false"):
        load_config(write(tmp_path, '[counter]\nthird_party_during_downtime = 1\n'), env={})


def test_a_whole_number_is_accepted_where_a_number_is_expected(tmp_path):
    config = load_config(write(tmp_path, '[counter]\ndata_age_hard_limit_hours = 48\n'), env={})
    assert config["counter"]["data_age_hard_limit_hours"] == 48.0


def test_an_unknown_entry_in_a_fixed_table_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"counter.fees_yen has no entry 'juminhyou'; did you mean juminhyo\?"):
        load_config(write(tmp_path, '[counter]\nfees_yen = { juminhyou = 200 }\n'), env={})


def test_environment_overrides_are_checked_too(tmp_path):
    assert load_config(env={"SONAE_SYNC_KEEP_GENERATIONS": "3"})["sync"]["keep_generations"] == 3
    with pytest.raises(ConfigError, match=r"SONAE_SYNC_KEEP_GENERATION: \[sync\] has no key 'keep_generation'; "
                                          r"did you mean SONAE_SYNC_KEEP_GENERATIONS\?"):
        load_config(env={"SONAE_SYNC_KEEP_GENERATION": "3"})
    with pytest.raises(ConfigError, match=r"SONAE_COUNTER_KILL_SWITCH_HOURS: counter.kill_switch_hours has no entry 'inkn'"):
        load_config(env={"SONAE_COUNTER_KILL_SWITCH_HOURS": '{"inkn": 3}'})


@pytest.mark.parametrize("port", [1, 8080, 65535])
def test_a_web_port_from_1_to_65535_is_read(tmp_path, port):
    assert load_config(write(tmp_path, f"[web]\nport = {port}\n"), env={})["web"]["port"] == port
    assert load_config(env={"SONAE_WEB_PORT": str(port)})["web"]["port"] == port


@pytest.mark.parametrize("port", [0, -1, 65536, 70000])
def test_a_web_port_outside_1_to_65535_is_refused(tmp_path, port):
    with pytest.raises(ConfigError, match=rf"sonae.toml: web.port: {port} is not a port: set a fixed port from 1 to 65535"):
        load_config(write(tmp_path, f"[web]\nport = {port}\n"), env={})
    with pytest.raises(ConfigError, match=rf"SONAE_WEB_PORT: web.port: {port} is not a port"):
        load_config(env={"SONAE_WEB_PORT": str(port)})


WARD_TOML = '[municipality]\nname = "八王子市"\n'


def test_a_utf8_file_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "sonae.toml"
    path.write_bytes(WARD_TOML.encode("utf-8-sig"))  # what Windows editors write
    assert load_config(path, env={})["municipality"]["name"] == "八王子市"


@pytest.mark.parametrize("text, encoding, found", [
    (WARD_TOML, "shift_jis", "byte 0x94 at position 23: Shift_JIS or UTF-16?"),
    (WARD_TOML, "utf-16", "byte 0xff at position 0: Shift_JIS or UTF-16?"),  # with its byte-order mark, as Notepad writes it
    ("[web]\nport = 8080\n", "utf-16-le", "it holds NUL bytes: UTF-16?"),  # ASCII without a mark: every byte is valid UTF-8
])
def test_a_file_in_another_encoding_is_refused_as_not_utf8(tmp_path, text, encoding, found):
    path = tmp_path / "sonae.toml"
    path.write_bytes(text.encode(encoding))
    with pytest.raises(ConfigError) as refused:
        load_config(path, env={})
    assert str(refused.value) == f"{path} is not UTF-8 ({found}): save it as UTF-8"


def test_environment_variables_of_other_tools_are_left_alone():
    config = load_config(env={"SONAE_CLOUDSIM_TOKEN": "x", "SONAE_PDF": "1"})
    assert config["sync"] == DEFAULTS["sync"]


def test_a_loaded_configuration_is_read_only_all_the_way_down(tmp_path):
    config = load_config(write(tmp_path, '[counter]\nmax_copies = 5\n'), env={})
    with pytest.raises(TypeError):
        config["counter"]["max_copies"] = 3
    with pytest.raises(TypeError):
        config["counter"]["kill_switch_hours"]["inkan"] = 1  # a table inside a section
    with pytest.raises(AttributeError):
        config["counter"]["terminals"].append({"id": "本庁4"})  # a list inside a section
    with pytest.raises(TypeError):
        config["counter"]["terminals"][0]["queue"] = "lp0"  # a table inside that list
    with pytest.raises(AttributeError, match="read-only"):
        config.home = tmp_path
    assert config["counter"]["max_copies"] == 5 and config.home != tmp_path


def test_a_read_only_configuration_still_reads_serialises_and_renders(tmp_path):
    import json

    import jinja2

    config = load_config(write(tmp_path, '[counter]\nserial_range = [900001, 900003]\n'), env={})
    plain = config.as_dict()
    assert json.loads(json.dumps(plain))["counter"]["serial_range"] == [900001, 900003]
    plain["counter"]["max_copies"] = 1  # the copy is the caller's own
    assert config["counter"]["max_copies"] == DEFAULTS["counter"]["max_copies"]
    page = jinja2.Template("{{ c.municipality.name }} {{ c.counter.terminals[0].id }} {{ c.counter.serial_range | join('-') }}")
    assert page.render(c=config) == "大田区 本庁1 900001-900003"
    assert load_config(write(tmp_path, render_toml(plain)), env={})["counter"]["max_copies"] == 1
