"""The marketing report: the analysis tables as an Excel workbook and one HTML page."""
