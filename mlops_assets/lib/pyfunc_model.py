"""The model MLflow logs from code (``lib.pyfunc.log_model``): run by MLflow, never imported.

MLflow executes this file when the model is logged and whenever it is loaded; the classifier
comes from the model's artifacts (``DelayModel.load_context``).
"""

from mlflow.models import set_model

from mlops_assets.lib.pyfunc import DelayModel

set_model(DelayModel())
