"""The packaged Hydra configs: where they live, and loading a `data` node for the apps and the evaluation."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
"""The packaged config tree (train.yaml + model/, data/, trainer/): the one place that knows where it is."""


def load_data_config(spec: str, overrides: Sequence[str] = ()) -> DictConfig:
    """A config name from configs/data (demo, vctk, ...) or a YAML file (a data node, or a run config with a `data:`
    node), plus `data.key=value` overrides -> the resolved data node; a ValueError naming the valid choices."""
    try:
        if spec.endswith((".yaml", ".yml")):
            cfg = OmegaConf.load(spec)
            node = cfg.data if "data" in cfg else cfg
        else:
            with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
                node = compose("train", overrides=[f"data={spec}"]).data
        node = OmegaConf.create(OmegaConf.to_container(node, resolve=True))
        OmegaConf.set_struct(node, True)
        return OmegaConf.merge(node, OmegaConf.from_dotlist([o.removeprefix("data.") for o in overrides]))
    except (OmegaConfBaseException, HydraException, OSError) as err:
        names = ", ".join(sorted(p.stem for p in (CONFIG_DIR / "data").glob("*.yaml")))
        first = str(err).strip().splitlines()[0]
        raise ValueError(f"--data {spec}: {first} (config names: {names}, or a .yaml file)") from None
