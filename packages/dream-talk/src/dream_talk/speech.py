"""Text to speech with eSpeak NG, for the demo's offline voice: :func:`synthesize_speech`.

Licence: eSpeak NG is GPL-3.0. dream-talk (Apache-2.0) neither ships nor links it. The library comes only with the
optional ``speech`` extra (``pip install 'dream-talk[speech]'``, which installs the ``espeakng-loader`` wheel holding
``libespeak-ng`` and its ``espeak-ng-data``), and it is loaded dynamically at run time through :mod:`ctypes` when
:func:`synthesize_speech` is first called. It is never a hard dependency: without the extra the function raises
:class:`ImportError` with the install hint and the demo falls back to its synthetic speech-like signal.

The calls follow eSpeak NG's public C API (``espeak-ng/speak_lib.h``): ``espeak_Initialize`` in synchronous mode
(``AUDIO_OUTPUT_SYNCHRONOUS``: ``espeak_Synth`` returns when the text is spoken, handing the 16-bit samples to the
callback set with ``espeak_SetSynthCallback`` on the calling thread), ``espeak_SetVoiceByName``,
``espeak_SetParameter(espeakRATE, ...)``, ``espeak_Synth`` and ``espeak_Synchronize``. The library is one global
instance per process, so it is initialised once and every synthesis holds a lock.
"""

from __future__ import annotations

import ctypes
import functools
import threading

import numpy as np

from genblocks.errors import InputError

__all__ = ["MAX_RATE_WPM", "MIN_RATE_WPM", "synthesize_speech"]

MIN_RATE_WPM = 80
"""Slowest speaking rate eSpeak NG accepts, in words per minute."""
MAX_RATE_WPM = 450
"""Fastest speaking rate eSpeak NG accepts, in words per minute."""

# Values from speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2  # espeak_AUDIO_OUTPUT: synthesis returns when done, samples go to the callback
_INITIALIZE_DONT_EXIT = 0x8000  # option of espeak_Initialize: report errors instead of exiting the process
_ESPEAK_RATE = 1  # espeak_PARAMETER espeakRATE, words per minute
_POS_CHARACTER = 1  # espeak_POSITION_TYPE
_CHARS_UTF8 = 1  # espeak_Synth flag espeakCHARS_UTF8
_EE_OK = 0  # espeak_ERROR
_EE_NOT_FOUND = 2

_INSTALL_HINT = (
    "eSpeak NG speech needs the optional `speech` extra: pip install 'dream-talk[speech]' "
    "(it installs espeakng-loader, whose libespeak-ng is GPL-3.0 and is loaded at run time only)"
)

# int t_espeak_callback(short *wav, int numsamples, espeak_EVENT *events): 0 continues, 1 aborts.
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

_LOCK = threading.Lock()


class _Engine:
    """The process's one initialised eSpeak NG library, with the callback that collects its samples.

    Only used while :data:`_LOCK` is held: the library keeps one voice, one rate and one callback for the process.
    """

    def __init__(self, library_path: str, data_path: str) -> None:
        try:
            lib = ctypes.CDLL(library_path)
        except OSError as error:
            raise ImportError(f"could not load {library_path} ({error}); {_INSTALL_HINT}") from error
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,  # text
            ctypes.c_size_t,  # size (bytes; unused in synchronous mode)
            ctypes.c_uint,  # position
            ctypes.c_int,  # position_type
            ctypes.c_uint,  # end_position (0: to the end)
            ctypes.c_uint,  # flags
            ctypes.c_void_p,  # unique_identifier
            ctypes.c_void_p,  # user_data
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.argtypes = []
        lib.espeak_Synchronize.restype = ctypes.c_int
        sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), _INITIALIZE_DONT_EXIT)
        if sample_rate <= 0:
            raise ImportError(f"eSpeak NG did not initialise with its data at {data_path}; {_INSTALL_HINT}")
        self.lib = lib
        self.sample_rate = int(sample_rate)
        self.chunks: list[np.ndarray] = []
        # ctypes frees a callback object that nothing references; the library keeps calling it, so it lives here.
        self.callback = _SynthCallback(self._collect)
        lib.espeak_SetSynthCallback(self.callback)

    def _collect(self, wav: ctypes._Pointer[ctypes.c_short], count: int, events: int | None) -> int:
        if wav and count > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, (count,)).copy())
        return 0

    def speak(self, text: str, voice: str, rate_wpm: int) -> np.ndarray:
        """int16 (N,) samples of ``text`` spoken by ``voice`` at ``rate_wpm``."""
        status = self.lib.espeak_SetVoiceByName(voice.encode())
        if status == _EE_NOT_FOUND:
            raise InputError(
                f"voice={voice!r}: eSpeak NG has no voice of that name (expected e.g. 'en', 'en-us', 'de')"
            )
        if status != _EE_OK:
            raise RuntimeError(f"espeak_SetVoiceByName({voice!r}) failed with status {status}")
        status = self.lib.espeak_SetParameter(_ESPEAK_RATE, rate_wpm, 0)
        if status != _EE_OK:
            raise RuntimeError(f"espeak_SetParameter(espeakRATE, {rate_wpm}) failed with status {status}")
        self.chunks = []
        encoded = text.encode("utf-8")
        status = self.lib.espeak_Synth(encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if status != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed with status {status}")
        self.lib.espeak_Synchronize()
        chunks, self.chunks = self.chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


@functools.cache
def _engine() -> _Engine:
    """Load and initialise eSpeak NG from the ``espeakng-loader`` wheel (once per process; call under the lock)."""
    try:
        import espeakng_loader  # type: ignore[import-untyped]
    except ImportError as error:
        raise ImportError(_INSTALL_HINT) from error
    try:
        data_path = espeakng_loader.get_data_path()
    except RuntimeError as error:
        raise ImportError(f"{error}; {_INSTALL_HINT}") from error
    return _Engine(espeakng_loader.get_library_path(), data_path)


def synthesize_speech(text: str, voice: str = "en", rate_wpm: int = 150) -> tuple[np.ndarray, int]:
    """Speak ``text`` with eSpeak NG (a formant synthesiser: intelligible, robotic; offline and fast).

    Args:
        text: What to say (UTF-8; plain text, not SSML).
        voice: An eSpeak NG voice name, e.g. ``"en"``, ``"en-us"``, ``"en+f3"`` (a variant), ``"de"``.
        rate_wpm: Speaking rate in words per minute, in [``MIN_RATE_WPM``, ``MAX_RATE_WPM``] = [80, 450].

    Returns:
        ``(samples, sample_rate)``: float32 (N,) mono in [-1, 1] and its rate in Hz (22050 for eSpeak NG's voices).
        eSpeak NG keeps state between utterances, so repeated calls agree in length to within 1% but are not
        bit-identical.

    Raises:
        ImportError: The optional ``speech`` extra (``espeakng-loader``) is not installed or its library cannot be
            loaded; the message names ``pip install 'dream-talk[speech]'``.
        InputError: ``text`` is empty, ``voice`` is not an eSpeak NG voice, or ``rate_wpm`` is out of range.
    """
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"text={text!r}: expected a non-empty sentence to speak")
    if "\0" in text:
        raise InputError("text: expected no NUL characters")
    if not isinstance(voice, str) or not voice.strip() or "\0" in voice:
        raise InputError(f"voice={voice!r}: expected an eSpeak NG voice name such as 'en'")
    if isinstance(rate_wpm, bool) or not isinstance(rate_wpm, int) or not MIN_RATE_WPM <= rate_wpm <= MAX_RATE_WPM:
        raise InputError(f"rate_wpm={rate_wpm!r}: expected an integer in [{MIN_RATE_WPM}, {MAX_RATE_WPM}]")
    with _LOCK:
        engine = _engine()
        samples = engine.speak(text, voice.strip(), rate_wpm)
        sample_rate = engine.sample_rate
    if samples.size == 0:
        raise InputError(f"text={text!r}: eSpeak NG spoke nothing (expected words to say)")
    return samples.astype(np.float32) / 32768.0, sample_rate
