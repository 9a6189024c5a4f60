"""Config files of `paddle-quant`: XML (hardened), YAML and JSON into one model; errors name the element."""

import json

import pytest
import yaml

from paddle_quant.cli.config_file import build_configs, load_config_file, parse_config_text
from paddle_quant.cli.config_model import ELEMENTS, read_skip_list
from paddle_quant.common.errors import ConfigError

# The published template (src/configs/paddle_quantization_config_template.xml of the seed):
# SaveDir under Model, the last block spelled Parameters, empty elements.
PUBLISHED_TEMPLATE = """<?xml version="1.0" encoding="utf-8"?>
<QuantizationConfigs>
    <Config>
        <Model>
            <PathPrefix></PathPrefix>
            <ModelDir>{model}</ModelDir>
            <ModelFileName></ModelFileName>
            <ParamsFileName></ParamsFileName>
            <SaveDir>{save}</SaveDir>
        </Model>
        <Dataset>
            <Name>ImageNet</Name>
            <Path></Path>
            <Mean>[0.485, 0.456, 0.406]</Mean>
            <Std>[0.229, 0.224, 0.225]</Std>
            <ImageResolution>[224, 224]</ImageResolution>
            <ResizeResolution>[256, 256]</ResizeResolution>
        </Dataset>
        <Parameters>
            <InputShape>[3, 224, 224]</InputShape>
            <InputName></InputName>
        </Parameters>
    </Config>
</QuantizationConfigs>
"""

# The documented one (the seed README): QuantizationParameters with SaveDir and Algorithm.
DOCUMENTED = """<QuantizationConfigs>
  <Config>
    <Model><Name>cls</Name><PathPrefix>{model}/inference</PathPrefix></Model>
    <Dataset><Name>lines</Name><Path>imgs</Path><Mean>0.5, 0.5, 0.5</Mean><Std>0.5, 0.5, 0.5</Std>
      <ChannelSwap>2, 1, 0</ChannelSwap><ResizeResolution>48, 192</ResizeResolution>
      <BatchSize>8</BatchSize><BatchNum>2</BatchNum></Dataset>
    <QuantizationParameters><InputShape>[3, 48, 192]</InputShape><InputName>x</InputName>
      <SaveDir>out</SaveDir><Algorithm>KL</Algorithm></QuantizationParameters>
  </Config>
  <Config>
    <Model><PathPrefix>{model}/inference</PathPrefix></Model>
    <Dataset><Path>imgs</Path></Dataset>
    <QuantizationParameters><SaveDir>out2</SaveDir></QuantizationParameters>
  </Config>
</QuantizationConfigs>
"""

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<QuantizationConfigs><Config><Model><Name>&lol9;</Name></Model></Config></QuantizationConfigs>
"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE foo [ <!ENTITY xxe SYSTEM "file://{secret}"> ]>
<QuantizationConfigs><Config><Model><Name>&xxe;</Name></Model></Config></QuantizationConfigs>
"""


@pytest.fixture
def model_dir(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "inference.pdmodel").write_bytes(b"m")
    (folder / "inference.pdiparams").write_bytes(b"p")
    return folder


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_published_template_parses_with_parameters_and_savedir_under_model(tmp_path, model_dir):
    path = _write(tmp_path / "t.xml", PUBLISHED_TEMPLATE.format(model=model_dir, save=tmp_path / "q"))
    run, = load_config_file(path)
    assert run.params_tag == "Parameters"
    assert run.params.input_shape == (3, 224, 224)
    assert run.params.input_name is None and run.dataset.path is None  # empty element: not set
    assert run.dataset.mean == (0.485, 0.456, 0.406)
    assert run.save_dir() == (tmp_path / "q").resolve()
    assert run.params.algorithm == "hist"  # the seed's default
    chain = run.preprocess_config()
    assert chain.resize == (256, 256) and chain.crop == (224, 224)  # resize, then centre crop; height, width


def test_documented_format_with_two_configs_and_relative_paths(tmp_path, model_dir):
    path = _write(tmp_path / "c.xml", DOCUMENTED.format(model=model_dir))
    first, second = load_config_file(path)
    assert first.params_tag == "QuantizationParameters"
    assert first.model_files().model_dir == model_dir
    assert first.save_dir() == (tmp_path / "out").resolve()  # relative to the config file's folder
    assert first.dataset.channel_swap == (2, 1, 0) and first.dataset.batch_num == 2
    assert first.ptq_config().algo == "KL" and second.ptq_config().algo == "hist"
    assert second.dataset.batch_size == 16


def test_yaml_and_json_give_the_same_model_as_xml(tmp_path, model_dir):
    xml_run, _ = load_config_file(_write(tmp_path / "c.xml", DOCUMENTED.format(model=model_dir)))
    tree = {"QuantizationConfigs": [
        {"Model": {"Name": "cls", "PathPrefix": f"{model_dir}/inference"},
         "Dataset": {"Name": "lines", "Path": "imgs", "Mean": [0.5, 0.5, 0.5], "Std": "0.5, 0.5, 0.5",
                     "ChannelSwap": [2, 1, 0], "ResizeResolution": [48, 192], "BatchSize": 8, "BatchNum": 2},
         "QuantizationParameters": {"InputShape": [3, 48, 192], "InputName": "x", "SaveDir": "out",
                                    "Algorithm": "KL"}}]}
    yaml_run, = load_config_file(_write(tmp_path / "c.yaml", yaml.safe_dump(tree)))
    json_run, = load_config_file(_write(tmp_path / "c.json", json.dumps(tree)))
    assert xml_run.model_dump() == yaml_run.model_dump() == json_run.model_dump()
    assert xml_run.ptq_config() == yaml_run.ptq_config()
    bare, = load_config_file(_write(tmp_path / "bare.yml", yaml.safe_dump(tree["QuantizationConfigs"][0])))
    assert bare.model_dump() == xml_run.model_dump()


def test_billion_laughs_is_refused_at_the_doctype_before_any_entity(tmp_path):
    """DTDForbidden comes from the DOCTYPE start handler, before any entity is declared, let alone expanded
    (the time this takes is in bench/fast_paths.py)."""
    path = _write(tmp_path / "bomb.xml", BILLION_LAUGHS)
    with pytest.raises(ConfigError, match="DOCTYPE") as info:
        load_config_file(path)
    assert "DTDForbidden" in str(info.value)


def test_external_entity_is_refused_and_not_read(tmp_path):
    secret = _write(tmp_path / "secret.txt", "TOPSECRET")
    with pytest.raises(ConfigError) as info:
        load_config_file(_write(tmp_path / "xxe.xml", EXTERNAL_ENTITY.format(secret=secret)))
    assert "TOPSECRET" not in str(info.value) and "refused" in str(info.value)


def test_yaml_alias_bomb_is_refused(tmp_path):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b]\n"
    with pytest.raises(ConfigError, match="alias"):
        load_config_file(_write(tmp_path / "bomb.yaml", bomb))


@pytest.mark.parametrize("xml, expected", [
    ("<QuantizationConfigs><Config><Dataset><Meen>1</Meen></Dataset></Config></QuantizationConfigs>",
     "did you mean 'Mean'"),
    ("<QuantizationConfigs><Config><QuantParameters/></Config></QuantizationConfigs>",
     "did you mean 'QuantizationParameters'"),
    ("<QuantizationConfigs><Config><Parameters><Algoritm>KL</Algoritm></Parameters></Config></QuantizationConfigs>",
     "did you mean 'Algorithm'"),
    ("<QuantizationConfig><Config/></QuantizationConfig>", "did you mean 'QuantizationConfigs'"),
    ("<QuantizationConfigs><Confg/></QuantizationConfigs>", "did you mean 'Config'"),
])
def test_wrong_element_names_suggest_the_right_one(xml, expected):
    with pytest.raises(ConfigError, match=expected):
        build_configs(parse_config_text(xml, "xml"), base_dir=".")


def _one(dataset=None, params=None):
    raw = {"Dataset": dataset or {}, "QuantizationParameters": params or {}}
    return build_configs([raw], base_dir=".")[0]


def test_mean_or_std_of_wrong_length():
    with pytest.raises(ConfigError, match=r"Config\[1\]/Dataset: Mean has 2 values .* allowed"):
        _one({"Mean": "[0.5, 0.5]"})
    with pytest.raises(ConfigError, match="Dataset: Std has 4 values"):
        _one({"Std": "1, 1, 1, 1"})
    assert _one({"Mean": "0.5", "Color": "L", "Std": "[0.5]"}).preprocess_config().channels == 1


def test_unknown_algorithm_names_element_and_allowed_values():
    with pytest.raises(ConfigError) as info:
        _one(params={"Algorithm": "percentile"})
    message = str(info.value)
    assert "QuantizationParameters/Algorithm" in message and "'percentile'" in message and "'KL'" in message
    assert _one(params={"Algorithm": "kl"}).ptq_config().algo == "KL"  # case-insensitive


@pytest.mark.parametrize("params, words", [
    ({"WeightBits": "16"}, ["WeightBits", "[2, 8]"]),
    ({"Granularity": "per_row"}, ["Granularity", "per_channel"]),
    ({"QuantizableOpType": "conv2d, depthwise_conv"}, ["depthwise_conv2d"]),
    ({"InputShape": "3, x, 4"}, ["InputShape", "'3, x, 4'"]),
    ({"IsFullQuantize": "maybe"}, ["IsFullQuantize", "true or false"]),
    ({"InputShape": "48, 192"}, ["InputShape [48, 192]", "3 ints"]),
])
def test_field_errors_name_element_and_allowed(params, words):
    with pytest.raises(ConfigError) as info:
        _one(params=params)
    for word in words:
        assert word in str(info.value)


def test_savedir_equal_to_model_dir_is_refused(tmp_path, model_dir):
    run = build_configs([{"Model": {"ModelDir": str(model_dir)}, "Parameters": {"SaveDir": str(model_dir)}}],
                        base_dir=tmp_path)[0]
    with pytest.raises(ConfigError, match="SaveDir .* is the model folder"):
        run.save_dir()
    inside = build_configs([{"Model": {"ModelDir": str(model_dir), "SaveDir": str(model_dir / "q")}}],
                           base_dir=tmp_path)[0]
    with pytest.raises(ConfigError, match="inside it"):
        inside.save_dir()


def test_missing_model_files_and_folders(tmp_path, model_dir):
    with pytest.raises(ConfigError, match="does not exist"):
        build_configs([{"Model": {"ModelDir": str(tmp_path / "nope")}}], base_dir=tmp_path)[0].model_files()
    with pytest.raises(ConfigError, match="ModelFileName"):
        build_configs([{"Model": {"ModelDir": str(model_dir), "ModelFileName": "x.pdmodel"}}],
                      base_dir=tmp_path)[0].model_files()
    with pytest.raises(ConfigError, match="PathPrefix .* or ModelDir"):
        build_configs([{}], base_dir=tmp_path)[0].model_files()
    with pytest.raises(ConfigError, match="Dataset/Path"):
        build_configs([{"Dataset": {"Path": "nowhere"}}], base_dir=tmp_path)[0].data_dir()
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(tmp_path / "missing.xml")
    with pytest.raises(ConfigError, match="suffix"):
        load_config_file(_write(tmp_path / "c.ini", "x"))


def test_savedir_given_twice_or_both_parameter_blocks():
    with pytest.raises(ConfigError, match="SaveDir is set twice"):
        build_configs([{"Model": {"SaveDir": "a"}, "Parameters": {"SaveDir": "b"}}], base_dir=".")
    with pytest.raises(ConfigError, match="not both"):
        build_configs([{"Parameters": {}, "QuantizationParameters": {}}], base_dir=".")


def test_flags_override_file_values_and_errors_name_the_flag(tmp_path, model_dir):
    path = _write(tmp_path / "c.xml", DOCUMENTED.format(model=model_dir))
    first, second = load_config_file(path, overrides={("QuantizationParameters", "Algorithm"): "mse",
                                                      ("Dataset", "BatchSize"): "4"})
    assert first.ptq_config().algo == second.ptq_config().algo == "mse"
    assert first.dataset.batch_size == 4
    with pytest.raises(ConfigError, match=r"from --batch-size"):
        load_config_file(path, overrides={("Dataset", "BatchSize"): "0"}, origins={"Dataset/BatchSize": "--batch-size"})
    # a SaveDir flag replaces the published template's Model/SaveDir instead of conflicting with it
    template = _write(tmp_path / "t.xml", PUBLISHED_TEMPLATE.format(model=model_dir, save="a"))
    run, = load_config_file(template, overrides={("QuantizationParameters", "SaveDir"): str(tmp_path / "b")})
    assert run.save_dir() == (tmp_path / "b").resolve()


def test_weight_options_map_to_ptq_config():
    ptq = _one(params={"WeightMethod": "admm", "Granularity": "per_tensor", "WeightBits": "6",
                       "ActivationBits": "8", "HistPercent": "0.999"}).ptq_config()
    assert (ptq.weight_method, ptq.weight_quantize_type, ptq.weight_bits, ptq.hist_percent) == (
        "admm", "abs_max", 6, 0.999)
    channel = _one(params={"WeightMethod": "channel_wise", "Granularity": "mixed"}).ptq_config()
    assert (channel.weight_method, channel.weight_quantize_type) == ("abs_max", "channel_wise_abs_max")
    with pytest.raises(ConfigError, match="contradicts"):
        _one(params={"WeightMethod": "channel_wise", "Granularity": "per_tensor"})


def test_round_type_maps_to_ptq_config_and_bad_values_name_the_element():
    ptq = _one(params={"RoundType": "adaround", "AdaRoundIterations": "50"}).ptq_config()
    assert (ptq.round_type, ptq.adaround_iterations) == ("adaround", 50)
    assert _one(params={}).ptq_config().round_type == "round"
    with pytest.raises(ConfigError, match="RoundType.*'round' or 'adaround'"):
        _one(params={"RoundType": "up"})
    with pytest.raises(ConfigError, match="AdaRoundIterations.*>= 1"):
        _one(params={"AdaRoundIterations": "0"})


def test_onednn_cpu_maps_to_ptq_config_and_bad_values_name_the_element():
    ptq = _one(params={"DeployBackend": "onednn", "OnednnCpu": "avx2"}).ptq_config()
    assert (ptq.deploy_backend, ptq.onednn_cpu) == ("onednn", "avx2")
    assert _one(params={}).ptq_config().onednn_cpu is None
    with pytest.raises(ConfigError, match="OnednnCpu.*'auto', 'vnni' or 'avx2'"):
        _one(params={"DeployBackend": "onednn", "OnednnCpu": "sse"})
    with pytest.raises(ConfigError, match="onednn_cpu.*deploy_backend"):
        _one(params={"OnednnCpu": "vnni"}).ptq_config()


def test_skip_list_file_text_or_analyzer_json(tmp_path):
    text = _write(tmp_path / "skip.txt", "conv1.w  # a comment\n\nrelu_3.tmp_0\n")
    assert read_skip_list(text) == ["conv1.w", "relu_3.tmp_0"]
    data = _write(tmp_path / "skip.json", json.dumps({"skip_list": ["a", "b"], "metric": "cosine"}))
    assert read_skip_list(data) == ["a", "b"]
    with pytest.raises(ConfigError, match="skip_list"):
        read_skip_list(_write(tmp_path / "bad.json", json.dumps({"skip": ["a"]})))
    run = build_configs([{"Parameters": {"SkipTensors": "skip.json", "SkipTensorList": "c, a"}}], base_dir=tmp_path)[0]
    assert run.ptq_config().skip_tensor_list == ("c", "a", "b")


def test_sampling_elements_are_exclusive_and_feed_the_reader_config():
    run = _one({"CalibrationSize": "5", "CalibrationSeed": "3"})
    assert (run.sampling_config().size, run.sampling_config().seed) == (5, 3)
    with pytest.raises(ConfigError, match="mutually exclusive"):
        _one({"CalibrationIndices": "1, 2", "CalibrationSeed": "0"})


def test_resize_defaults_to_the_input_shape():
    chain = _one(params={"InputShape": "[3, 48, 192]"}).preprocess_config()
    assert chain.resize == (48, 192) and chain.crop is None
    nhwc = _one({"Layout": "NHWC"}, {"InputShape": "1, 32, 64, 3"}).preprocess_config()
    assert nhwc.resize == (32, 64)


def test_every_documented_element_has_an_allowed_text():
    from paddle_quant.cli.config_model import _ALLOWED

    for names in ELEMENTS.values():
        for name in names:
            assert name in _ALLOWED, name


def test_output_scales_unset_take_the_deploy_backends_default():
    assert _one(params={"DeployBackend": "onednn"}).ptq_config().effective_output_scales == "none"
    assert _one(params={"DeployBackend": "tensorrt"}).ptq_config().effective_output_scales == "all"
    assert _one(params={"DeployBackend": "onednn", "OutputScales": "all"}).ptq_config().effective_output_scales == "all"
