#!/usr/bin/python3
"""Usage: breast_sr_values.py fixtures DIR STUDY_UID
       breast_sr_values.py REPORT [SOURCE]

"fixtures" writes the evidence of a small breast study into DIR, as
devices write it: mg-l-cc.dcm and mg-l-mlo.dcm (Digital Mammography For
Presentation, left breast) and us-r.dcm (Ultrasound Image, right breast),
all in study STUDY_UID, and prints one line per file:

    file|<name>|<SOP Class UID>|<SOP Instance UID>|<Series Instance UID>

Otherwise prints what an independent reader (pydicom) finds in the breast
report, one fact a line, for tests/unit/test-breast-sr.c to compare:

    copied|<keyword>|ok          (with SOURCE: attributes that must match)
    copied|<keyword>|differs|<source value>|<report value>
    study|<Study Instance UID>
    series|<Series Number>|<Series Description>
    class|<SOP Class UID>
    evidence|<study>|<series>|<SOP class>|<SOP instance>
    procedure|<scheme>|<code>
    library|<SOP class>|<SOP instance>
    <group>|NUM|<concept code>|<numeric value as stored>|<unit code>
    <group>|CODE|<concept code>|<value scheme>|<value code>
    <group>|TEXT|<concept code>|<text>
    <group>|UIDREF|<concept code>|<UID>

<group> is the Tracking Identifier of the enclosing measurement group,
or "-" outside any group.
"""

import os
import sys

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

TRACKING_IDENTIFIER = "112039"
IMAGE_LIBRARY = "111028"
PROCEDURE_REPORTED = "121058"
COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
          "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID",
          "AccessionNumber", "ReferringPhysicianName")
MG_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"


def base(study, series, sop_class, modality, number):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid(prefix="2.25.")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Test^Breast"
    ds.PatientID = "BR42"
    ds.PatientBirthDate = "19720304"
    ds.PatientSex = "F"
    ds.PatientAge = "052Y"
    ds.PatientSize = "1.65"
    ds.PatientWeight = "61"
    ds.StudyInstanceUID = study
    ds.StudyDate = "20240611"
    ds.StudyTime = "101500"
    ds.StudyID = "B1"
    ds.AccessionNumber = "ACCB42"
    ds.ReferringPhysicianName = "Ref^Doctor"
    ds.SeriesInstanceUID = series
    ds.SeriesNumber = number
    ds.InstanceNumber = 1
    ds.Modality = modality
    ds.Manufacturer = "Phantom"
    return ds


def mammogram(study, series, view, orientation):
    ds = base(study, series, MG_PRESENTATION, "MG", 1)
    ds.ImageLaterality = "L"
    ds.ViewPosition = view
    ds.PatientOrientation = orientation
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = 16, 12
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.ImagerPixelSpacing = [0.1, 0.1]
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = (np.arange(16 * 12, dtype=np.uint16) * 16).tobytes()
    return ds


def ultrasound(study, series):
    ds = base(study, series, US_IMAGE, "US", 2)
    ds.ImageLaterality = "R"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = 12, 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.arange(12 * 16, dtype=np.uint8).tobytes()
    return ds


def fixtures(out, study):
    os.makedirs(out, exist_ok=True)
    mg_series, us_series = generate_uid(prefix="2.25."), generate_uid(prefix="2.25.")
    files = {
        "mg-l-cc.dcm": mammogram(study, mg_series, "CC", ["A", "R"]),
        "mg-l-mlo.dcm": mammogram(study, mg_series, "MLO", ["A", "FR"]),
        "us-r.dcm": ultrasound(study, us_series),
    }
    for name, ds in files.items():
        ds.save_as(os.path.join(out, name), write_like_original=False)
        print(f"file|{name}|{ds.SOPClassUID}|{ds.SOPInstanceUID}|{ds.SeriesInstanceUID}")


def code(item, attr):
    seq = item.get(attr)
    return seq[0].CodeValue if seq else ""


def walk(items, group, in_library):
    for it in items:
        if it.ValueType == "TEXT" and code(it, "ConceptNameCodeSequence") == TRACKING_IDENTIFIER:
            group = it.TextValue
    for it in items:
        name = code(it, "ConceptNameCodeSequence")
        if it.ValueType == "NUM" and not in_library:
            mv = it.MeasuredValueSequence[0]
            unit = code(mv, "MeasurementUnitsCodeSequence")
            print(f"{group}|NUM|{name}|{mv.NumericValue.original_string}|{unit}")
        elif it.ValueType == "CODE" and name == PROCEDURE_REPORTED:
            value = it.ConceptCodeSequence[0]
            print(f"procedure|{value.CodingSchemeDesignator}|{value.CodeValue}")
        elif it.ValueType == "CODE" and not in_library:
            value = it.ConceptCodeSequence[0]
            print(f"{group}|CODE|{name}|{value.CodingSchemeDesignator}|{value.CodeValue}")
        elif it.ValueType == "TEXT" and not in_library:
            print(f"{group}|TEXT|{name}|{it.TextValue}")
        elif it.ValueType == "UIDREF" and not in_library:
            print(f"{group}|UIDREF|{name}|{it.UID}")
        elif it.ValueType == "IMAGE" and in_library:
            ref = it.ReferencedSOPSequence[0]
            print(f"library|{ref.ReferencedSOPClassUID}|{ref.ReferencedSOPInstanceUID}")
        if "ContentSequence" in it:
            walk(it.ContentSequence, group, in_library or name == IMAGE_LIBRARY)


def report(path, source):
    ds = pydicom.dcmread(path)
    if source:
        src = pydicom.dcmread(source, stop_before_pixels=True)
        for kw in COPIED:
            a, b = str(src.get(kw, "<absent>")), str(ds.get(kw, "<absent>"))
            print(f"copied|{kw}|ok" if a == b and kw in ds else f"copied|{kw}|differs|{a}|{b}")
    print(f"study|{ds.StudyInstanceUID}")
    print(f"series|{ds.SeriesNumber}|{ds.SeriesDescription}")
    print(f"class|{ds.SOPClassUID}")
    for st in ds.get("CurrentRequestedProcedureEvidenceSequence", []):
        for se in st.ReferencedSeriesSequence:
            for sop in se.ReferencedSOPSequence:
                print(f"evidence|{st.StudyInstanceUID}|{se.SeriesInstanceUID}|"
                      f"{sop.ReferencedSOPClassUID}|{sop.ReferencedSOPInstanceUID}")
    walk(ds.ContentSequence, "-", False)


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "fixtures":
        fixtures(sys.argv[2], sys.argv[3])
    else:
        report(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)


if __name__ == "__main__":
    main()
