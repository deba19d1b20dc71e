"""lunarseg.benchmarks: accuracy/speed/size table per artifact, limit gate, Pareto plot, selection."""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
