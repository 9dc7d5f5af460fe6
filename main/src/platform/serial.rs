//! COM1: a 16550 UART (vm-superio) whose interrupt is an irqfd and whose
//! output goes to stdout, a file, or nowhere.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::vcpu::bus::{BusDevice, DeviceRequest};

/// Raises the UART's interrupt by signalling an irqfd.
pub struct IrqfdTrigger(pub EventFd);

impl Trigger for IrqfdTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// COM1's output: the UART flushes after every byte, which costs a system
/// call per byte. Unless the output is interactive, bytes are kept until a
/// line ends (or a few KiB pile up), and whatever is left is written when the
/// VM ends.
pub struct SerialOutput {
    out: Box<dyn Write + Send>,
    pending: Vec<u8>,
    interactive: bool,
}

/// Bytes kept at most before they are written even without a newline.
const PENDING_MAX: usize = 4096;

impl SerialOutput {
    /// Output to `out`; `interactive` (a terminal) writes every byte at once.
    pub fn new(out: Box<dyn Write + Send>, interactive: bool) -> Self {
        SerialOutput {
            out,
            pending: Vec::with_capacity(PENDING_MAX),
            interactive,
        }
    }

    fn write_pending(&mut self) -> std::io::Result<()> {
        let result = self
            .out
            .write_all(&self.pending)
            .and_then(|_| self.out.flush());
        self.pending.clear();
        result
    }
}

impl Write for SerialOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.interactive
            || self.pending.len() >= PENDING_MAX
            || self.pending.last() == Some(&b'\n')
        {
            self.write_pending()
        } else {
            Ok(())
        }
    }
}

impl Drop for SerialOutput {
    fn drop(&mut self) {
        let _ = self.write_pending();
    }
}

/// The UART as a port-I/O device.
pub struct SerialPort {
    uart: Serial<IrqfdTrigger, NoEvents, SerialOutput>,
}

impl SerialPort {
    /// A UART raising `irq` and writing what the guest sends to `out`.
    pub fn new(irq: EventFd, out: SerialOutput) -> Self {
        SerialPort {
            uart: Serial::new(IrqfdTrigger(irq), out),
        }
    }

    /// Queues `input` for the guest to read; returns how much fitted.
    pub fn push_input(&mut self, input: &[u8]) -> usize {
        let room = self.uart.fifo_capacity().min(input.len());
        self.uart.enqueue_raw_bytes(&input[..room]).unwrap_or(0)
    }
}

impl BusDevice for SerialPort {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let (Ok(off), [byte]) = (u8::try_from(offset), data) {
            *byte = self.uart.read(off);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> DeviceRequest {
        if let (Ok(off), [byte]) = (u8::try_from(offset), data) {
            if let Err(e) = self.uart.write(off, *byte) {
                log::warn!("serial: {e}");
            }
        }
        DeviceRequest::None
    }
}

/// Feeds moatvm's standard input to the guest's UART, on a thread of its own.
/// It ends at end of input.
pub fn spawn_stdin_reader(port: Arc<Mutex<SerialPort>>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("serial-stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 64];
            loop {
                let n = match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let mut rest = &buf[..n];
                while !rest.is_empty() {
                    let taken = port
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push_input(rest);
                    rest = &rest[taken..];
                    if taken == 0 {
                        // The guest has not drained its receive FIFO yet.
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                }
            }
        })
        .map(|_| ())
}

/// Collects what is written, for tests that watch COM1's output.
#[cfg(test)]
#[derive(Clone, Default)]
pub struct Sink(pub Arc<Mutex<Vec<u8>>>);

#[cfg(test)]
impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transmit_reaches_the_output_and_raises_no_irq_unless_enabled() {
        let sink = Sink::default();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut port = SerialPort::new(
            irq.try_clone().unwrap(),
            SerialOutput::new(Box::new(sink.clone()), true),
        );
        for b in b"hi" {
            port.write(0, &[*b]);
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"hi");
        assert!(irq.read().is_err(), "no interrupt was enabled");
        // Enable the receive-data interrupt, then input raises it.
        port.write(1, &[0x01]);
        assert_eq!(port.push_input(b"x"), 1);
        assert_eq!(irq.read().unwrap(), 1);
        let mut b = [0u8];
        port.read(0, &mut b);
        assert_eq!(b[0], b'x');
    }

    #[test]
    fn non_interactive_output_is_written_a_line_at_a_time() {
        let sink = Sink::default();
        let mut out = SerialOutput::new(Box::new(sink.clone()), false);
        for b in b"ab\ncd" {
            out.write_all(&[*b]).unwrap();
            out.flush().unwrap();
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"ab\n");
        drop(out);
        assert_eq!(&*sink.0.lock().unwrap(), b"ab\ncd");
    }

    #[test]
    fn wide_or_far_accesses_are_ignored() {
        let mut port = SerialPort::new(
            EventFd::new(0).unwrap(),
            SerialOutput::new(Box::new(std::io::sink()), false),
        );
        let mut wide = [0xaau8; 2];
        port.read(0, &mut wide);
        assert_eq!(wide, [0xaa, 0xaa]);
        port.write(1 << 40, &[1]);
        port.write(0, &[]);
    }
}
