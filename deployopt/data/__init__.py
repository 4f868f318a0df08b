"""Where inputs come from: array files, registered and user datasets, image folders, generated inputs, and the
one resolver (:mod:`deployopt.data.plan`) that picks calibration and verification data."""
