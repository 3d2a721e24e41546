"""The bottom layer: numpy-only facts and contracts every stage shares, the robot included.

Nothing here imports another roverlite package, TensorFlow or Pillow (``.importlinter`` checks it):

* :mod:`roverlite.core.metrics`: confusion matrix, IoU, mIoU, hazard rates;
* :mod:`roverlite.core.formats`: the export formats' facts (suffix, runtime, precision), without
  their converters;
* :mod:`roverlite.core.preprocessing`: input rules shared by the loader, the sidecar and the device;
* :mod:`roverlite.core.errors`: the config error type and the did-you-mean helper.

A device bundle (:func:`roverlite.deploy.make_bundle`) copies the modules ``roverlite.deploy`` uses.
"""
