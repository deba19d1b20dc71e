"""The runtime layer must never pull in TensorFlow, Keras or tfmot (rover boards do not have them)."""
import subprocess
import sys
import textwrap

HEAVY = ("tensorflow", "tf_keras", "keras", "tensorflow_model_optimization", "tf2onnx")


def test_importing_runtime_loads_no_training_framework():
    code = textwrap.dedent(
        f"""
        import sys, pkgutil, importlib
        import lunarseg.runtime as rt
        for m in pkgutil.iter_modules(rt.__path__):
            importlib.import_module("lunarseg.runtime." + m.name)
        import lunarseg.cli
        lunarseg.cli.build_parser()
        bad = sorted(n for n in sys.modules if n.split(".")[0] in {HEAVY!r})
        print(",".join(bad))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"heavy modules imported: {out.stdout.strip()}"


def test_runtime_imports_no_other_lunarseg_layer():
    code = textwrap.dedent(
        """
        import sys, pkgutil, importlib
        import lunarseg.runtime as rt
        for m in pkgutil.iter_modules(rt.__path__):
            importlib.import_module("lunarseg.runtime." + m.name)
        layers = ("lunarseg.train", "lunarseg.export", "lunarseg.benchmarks", "lunarseg.data")
        print(",".join(sorted(n for n in sys.modules if n.startswith(layers))))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
