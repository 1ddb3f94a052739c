#!/usr/bin/python3
"""Usage: sr_values.py REPORT [SOURCE]

Prints what an independent reader (pydicom) finds in an SR file, one
fact a line, for tests/unit/test-sr.c to compare:

    copied|<keyword>|ok          (with SOURCE: attributes that must match)
    copied|<keyword>|differs|<source value>|<report value>
    study|<Study Instance UID>
    series|<Series Number>|<Series Description>
    <group>|NUM|<concept code>|<numeric value as stored>|<unit code>
    <group>|CODE|<concept code>|<value code>
    <group>|TEXT|<concept code>|<text>

<group> is the Tracking Identifier of the enclosing measurement group,
or "-" outside any group.
"""

import sys

import pydicom

TRACKING_IDENTIFIER = "112039"
COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
          "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID",
          "AccessionNumber", "ReferringPhysicianName")


def code(item, attr):
    seq = item.get(attr)
    return seq[0].CodeValue if seq else ""


def walk(items, group):
    for it in items:
        if it.ValueType == "TEXT" and code(it, "ConceptNameCodeSequence") == TRACKING_IDENTIFIER:
            group = it.TextValue
    for it in items:
        name = code(it, "ConceptNameCodeSequence")
        if it.ValueType == "NUM":
            mv = it.MeasuredValueSequence[0]
            unit = code(mv, "MeasurementUnitsCodeSequence")
            print(f"{group}|NUM|{name}|{mv.NumericValue.original_string}|{unit}")
        elif it.ValueType == "CODE":
            print(f"{group}|CODE|{name}|{code(it, 'ConceptCodeSequence')}")
        elif it.ValueType == "TEXT":
            print(f"{group}|TEXT|{name}|{it.TextValue}")
        if "ContentSequence" in it:
            walk(it.ContentSequence, group)


def main():
    ds = pydicom.dcmread(sys.argv[1])
    if len(sys.argv) > 2:
        src = pydicom.dcmread(sys.argv[2], stop_before_pixels=True)
        for kw in COPIED:
            a, b = str(src.get(kw, "<absent>")), str(ds.get(kw, "<absent>"))
            print(f"copied|{kw}|ok" if a == b and kw in ds else f"copied|{kw}|differs|{a}|{b}")
    print(f"study|{ds.StudyInstanceUID}")
    print(f"series|{ds.SeriesNumber}|{ds.SeriesDescription}")
    walk(ds.ContentSequence, "-")


if __name__ == "__main__":
    main()
