"""The shipped assets, installed as the package ``torl_rllib.assets`` (pyproject.toml maps this
folder there); read them with ``torl_rllib.utils.resources.asset_path``. A regular package, not a
namespace one: setuptools' editable installs cannot find a namespace package mapped from
another folder."""
