from .adais import AdaiS
from .adams import AdamS, AMSGradS
from .sgds import SGDS

__all__ = ["AdamS", "AMSGradS", "SGDS", "AdaiS"]
