from helpers.pipeline import keys


def test_code_digest_ignores_docstrings_and_comments_but_not_code(tmp_path, monkeypatch):
    monkeypatch.setattr(keys, "PACKAGE", tmp_path)
    source = tmp_path / "m.py"
    source.write_text('"""Doc."""\ndef f(x):\n    """Doc."""\n    return x + 1  # one\n')
    a = keys.code_digest(["m"])
    source.write_text('"""Other words."""\n\n\ndef f(x):\n    # a comment\n    return x + 1\n')
    assert keys.code_digest(["m"]) == a
    source.write_text('def f(x):\n    return x + 2\n')
    assert keys.code_digest(["m"]) != a


def test_differences_name_each_setting_input_and_module():
    a = {"params": {"seed": 0, "layers": ["conv1", "fc1"]}, "inputs": {"images": {"n": 320, "indices": "ab"}},
         "code": {"helpers/bases.py": "sha256:1"}}
    b = {"params": {"seed": 1, "layers": ["fc1"]}, "inputs": {"images": {"n": 200, "indices": "cd"}},
         "code": {"helpers/bases.py": "sha256:2"}}
    assert keys.differences(a, b) == ["seed=0 (now 1)", "images.indices='ab' (now 'cd')", "images.n=320 (now 200)",
                                      "other code (helpers/bases.py has changed since)"]
    assert "layers=['conv1', 'fc1'] (now ['fc1'])" in keys.differences(a, b, exact=True)
    assert keys.differences(a, a) == []
