"""Camera backends behind one Protocol: simulator, folder replay, OpenCV/V4L2, picamera2."""

from kiosk.camera.base import Camera, Exposure, Still, create_camera, open_camera

__all__ = ["Camera", "Exposure", "Still", "create_camera", "open_camera"]
