"""The bottom layer: numpy-only facts and contracts every stage shares, the robot included.

Nothing here imports another roverlite package, TensorFlow or Pillow (``.importlinter`` checks it):

* :mod:`roverlite.core.metrics`: confusion matrix, IoU, mIoU, hazard rates;
* :mod:`roverlite.core.formats`: the export formats' facts (suffix, runtime, precision), without
  their converters;
* :mod:`roverlite.core.preprocessing`: :class:`~roverlite.core.preprocessing.Preprocessing`, the input
  rules (size, channels, normalisation, gray tolerance, resize method) shared by the loader, the
  sidecar and the device, with the NumPy operations they apply;
* :mod:`roverlite.core.errors`: the config error type and the did-you-mean helper;
* :mod:`roverlite.core.documents`: the run folder's JSON documents, stamped with kind and version,
  and their typed readers.

A device bundle (:func:`roverlite.deploy.make_bundle`) copies the modules ``roverlite.deploy`` uses.
"""
