"""Sonae printing: render certificate data to signed PDFs and send them to printers."""
