//! The pickle stack machine. Iterative (no recursion on input), bounded: every length is checked
//! against the bytes that remain, and containers may nest at most [`MAX_DEPTH`] deep.

use std::collections::HashMap;

use flambeau_core::{Dict, DictKind, Value};

use super::globals;
use super::types::{Item, Resolver};
use crate::{Error, Result};

/// Deepest nesting of containers accepted (checkpoints use fewer than 10 levels; the limit keeps
/// hostile files from overflowing the stack when values are dropped).
pub const MAX_DEPTH: u32 = 512;

struct Slot {
    item: Item,
    /// The memo index this very object was stored under, so that later GETs see it as it is
    /// now rather than as it was when stored (Python memoises references).
    memo: Option<u32>,
}

/// The machine over one pickle stream.
pub struct Vm<'a, 'r> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Slot>,
    marks: Vec<usize>,
    memo: HashMap<u32, Item>,
    resolver: &'r mut dyn Resolver,
}

macro_rules! bail {
    ($vm:expr, $($arg:tt)*) => {
        return Err(Error::Pickle { offset: $vm.pos, message: format!($($arg)*) })
    };
}

impl<'a, 'r> Vm<'a, 'r> {
    /// A machine reading `data` from its start.
    pub fn new(data: &'a [u8], resolver: &'r mut dyn Resolver) -> Self {
        Self {
            data,
            pos: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            resolver,
        }
    }

    /// Where the machine is in the input (after [`run`](Self::run): just past STOP).
    pub fn position(&self) -> usize {
        self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.data.len() - self.pos {
            return Err(Error::Truncated(format!(
                "pickle needs {n} more bytes at offset {}, {} remain",
                self.pos,
                self.data.len() - self.pos
            )));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn len_u64(&mut self) -> Result<usize> {
        let n = self.u64()?;
        usize::try_from(n)
            .map_err(|_| Error::Truncated(format!("length {n} at offset {}", self.pos)))
    }
    fn line(&mut self) -> Result<&'a str> {
        let rest = &self.data[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| Error::Truncated(format!("unterminated line at offset {}", self.pos)))?;
        let s = std::str::from_utf8(&rest[..end]).map_err(|_| Error::Pickle {
            offset: self.pos,
            message: "line is not UTF-8".into(),
        })?;
        self.pos += end + 1;
        Ok(s)
    }

    fn push_value(&mut self, v: Value) {
        self.stack.push(Slot {
            item: Item::Value(v, 0),
            memo: None,
        });
    }

    fn push_item(&mut self, item: Item) {
        self.stack.push(Slot { item, memo: None });
    }

    /// Pops one item; a memoised container's final state goes back to the memo.
    fn pop(&mut self) -> Result<Item> {
        let Some(slot) = self.stack.pop() else {
            bail!(self, "stack underflow");
        };
        if self.marks.last().is_some_and(|&m| m > self.stack.len()) {
            bail!(self, "pop across a MARK");
        }
        if let Some(m) = slot.memo {
            self.memo.insert(m, slot.item.clone());
        }
        Ok(slot.item)
    }

    fn pop_value(&mut self) -> Result<Value> {
        Ok(self.pop()?.into_value())
    }

    /// Pops everything down to the last MARK, in stack order.
    fn pop_mark(&mut self) -> Result<Vec<Item>> {
        let Some(mark) = self.marks.pop() else {
            bail!(self, "no MARK on the stack");
        };
        if mark > self.stack.len() {
            bail!(self, "MARK above the stack");
        }
        let slots = self.stack.split_off(mark);
        Ok(slots
            .into_iter()
            .map(|s| {
                if let Some(m) = s.memo {
                    self.memo.insert(m, s.item.clone());
                }
                s.item
            })
            .collect())
    }

    fn top(&mut self) -> Result<&mut Slot> {
        match self.stack.last_mut() {
            Some(s) => Ok(s),
            None => Err(Error::Pickle {
                offset: self.pos,
                message: "empty stack".into(),
            }),
        }
    }

    /// Builds a container value from items, tracking nesting depth.
    fn container(
        &mut self,
        items: Vec<Item>,
        make: impl FnOnce(Vec<Value>) -> Value,
    ) -> Result<Item> {
        let depth = 1 + items.iter().map(Item::depth).max().unwrap_or(0);
        if depth > MAX_DEPTH {
            bail!(self, "containers nested deeper than {MAX_DEPTH}");
        }
        Ok(Item::Value(
            make(items.into_iter().map(Item::into_value).collect()),
            depth,
        ))
    }

    fn set_items(&mut self, pairs: Vec<Item>) -> Result<()> {
        if !pairs.len().is_multiple_of(2) {
            bail!(self, "SETITEMS with an odd number of items");
        }
        let depth = pairs.iter().map(Item::depth).max().unwrap_or(0) + 1;
        let pos = self.pos;
        let top = self.top()?;
        let Item::Value(Value::Dict(d), dd) = &mut top.item else {
            return Err(Error::Pickle {
                offset: pos,
                message: "SETITEM(S) on a non-dict".into(),
            });
        };
        *dd = (*dd).max(depth);
        if *dd > MAX_DEPTH {
            return Err(Error::Pickle {
                offset: pos,
                message: format!("containers nested deeper than {MAX_DEPTH}"),
            });
        }
        let mut it = pairs.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.insert(k.into_value(), v.into_value());
        }
        Ok(())
    }

    fn append_items(&mut self, items: Vec<Item>) -> Result<()> {
        let depth = items.iter().map(Item::depth).max().unwrap_or(0) + 1;
        let pos = self.pos;
        let top = self.top()?;
        let Item::Value(Value::List(l) | Value::Set(l), dd) = &mut top.item else {
            return Err(Error::Pickle {
                offset: pos,
                message: "APPEND(S)/ADDITEMS on a non-list".into(),
            });
        };
        *dd = (*dd).max(depth);
        if *dd > MAX_DEPTH {
            return Err(Error::Pickle {
                offset: pos,
                message: format!("containers nested deeper than {MAX_DEPTH}"),
            });
        }
        l.extend(items.into_iter().map(Item::into_value));
        Ok(())
    }

    fn memo_put(&mut self, index: u32) -> Result<()> {
        let top = self.top()?;
        top.memo = Some(index);
        let item = top.item.clone();
        self.memo.insert(index, item);
        Ok(())
    }

    fn memo_get(&mut self, index: u32) -> Result<()> {
        // The object may still be on the stack, mutated since it was stored.
        let live = self
            .stack
            .iter()
            .rev()
            .find(|s| s.memo == Some(index))
            .map(|s| s.item.clone());
        let item = match live.or_else(|| self.memo.get(&index).cloned()) {
            Some(i) => i,
            None => bail!(self, "memo key {index} was never stored"),
        };
        self.push_item(item);
        Ok(())
    }

    /// Applies a callable (REDUCE, NEWOBJ, OBJ, INST) through the table of known globals.
    fn call(&mut self, callable: Item, args: Vec<Value>, args_depth: u32) -> Result<()> {
        let depth = args_depth + 1;
        if depth > MAX_DEPTH {
            bail!(self, "containers nested deeper than {MAX_DEPTH}");
        }
        let pos = self.pos;
        let v = globals::call(callable, args, self.resolver).map_err(|e| match e {
            Error::Pickle { message, .. } => Error::Pickle {
                offset: pos,
                message,
            },
            other => other,
        })?;
        self.push_item(Item::Value(v, depth));
        Ok(())
    }

    fn long(&mut self, n: usize) -> Result<Value> {
        let bytes = self.take(n)?;
        if n <= 8 {
            let mut buf = if bytes.last().is_some_and(|&b| b & 0x80 != 0) {
                [0xffu8; 8]
            } else {
                [0u8; 8]
            };
            buf[..n].copy_from_slice(bytes);
            Ok(Value::Int(i64::from_le_bytes(buf)))
        } else {
            Ok(Value::BigInt(bytes.to_vec()))
        }
    }

    /// Runs to STOP and returns the pickled object.
    pub fn run(&mut self) -> Result<Value> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        bail!(self, "unsupported pickle protocol {proto}");
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: a length hint
                }
                b'.' => {
                    let v = self.pop_value()?;
                    return Ok(v);
                }
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self.top()?.item.clone();
                    self.push_item(top);
                }
                b'}' => self.push_value(Value::Dict(Dict::new(DictKind::Plain))),
                b']' => self.push_value(Value::List(Vec::new())),
                b')' => self.push_value(Value::Tuple(Vec::new())),
                0x8f => self.push_value(Value::Set(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    let item = self.container(items, Value::Tuple)?;
                    self.push_item(item);
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    let item = self.container(items, Value::Tuple)?;
                    self.push_item(item);
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    let item = self.container(items, Value::List)?;
                    self.push_item(item);
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    let item = self.container(items, Value::Set)?;
                    self.push_item(item);
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push_value(Value::Dict(Dict::new(DictKind::Plain)));
                    self.set_items(items)?;
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append_items(vec![v])?;
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    self.append_items(items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.take(4)?.try_into().expect("4"));
                    self.push_value(Value::Int(v as i64));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push_value(Value::Int(v as i64));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push_value(Value::Int(v as i64));
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let v = self.long(n)?;
                    self.push_value(v);
                }
                0x8b => {
                    let n = self.u32()? as usize;
                    let v = self.long(n)?;
                    self.push_value(v);
                }
                b'I' | b'L' => {
                    let line = self.line()?.trim_end_matches('L');
                    let v = match line {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        s => match s.parse::<i64>() {
                            Ok(i) => Value::Int(i),
                            Err(_) => bail!(self, "bad integer literal {s:?}"),
                        },
                    };
                    self.push_value(v);
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().expect("8"));
                    self.push_value(Value::Float(v));
                }
                b'F' => {
                    let line = self.line()?;
                    match line.parse::<f64>() {
                        Ok(f) => self.push_value(Value::Float(f)),
                        Err(_) => bail!(self, "bad float literal {line:?}"),
                    }
                }
                b'N' => self.push_value(Value::None),
                0x88 => self.push_value(Value::Bool(true)),
                0x89 => self.push_value(Value::Bool(false)),
                b'X' | 0x8c | 0x8d => {
                    let n = match op {
                        b'X' => self.u32()? as usize,
                        0x8c => self.u8()? as usize,
                        _ => self.len_u64()?,
                    };
                    let bytes = self.take(n)?;
                    match std::str::from_utf8(bytes) {
                        Ok(s) => self.push_value(Value::Str(s.to_string())),
                        Err(_) => bail!(self, "string is not UTF-8"),
                    }
                }
                b'V' => {
                    let s = self.line()?.to_string();
                    self.push_value(Value::Str(s));
                }
                b'T' | b'U' => {
                    let n = if op == b'T' {
                        self.u32()? as usize
                    } else {
                        self.u8()? as usize
                    };
                    let bytes = self.take(n)?;
                    // Python 2 `str`: bytes, decoded as latin-1 like Python 3's encoding='latin1'.
                    self.push_value(Value::Str(bytes.iter().map(|&b| b as char).collect()));
                }
                b'B' | b'C' | 0x8e | 0x96 => {
                    let n = match op {
                        b'B' => self.u32()? as usize,
                        b'C' => self.u8()? as usize,
                        _ => self.len_u64()?,
                    };
                    let bytes = self.take(n)?.to_vec();
                    self.push_value(Value::Bytes(bytes));
                }
                b'c' => {
                    let module = self.line()?.to_string();
                    let name = self.line()?.to_string();
                    self.push_item(Item::Global(module, name));
                }
                0x93 => {
                    let name = self.pop_value()?;
                    let module = self.pop_value()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.push_item(Item::Global(m, n)),
                        _ => bail!(self, "STACK_GLOBAL needs two strings"),
                    }
                }
                b'R' | 0x81 | 0x92 => {
                    if op == 0x92 {
                        self.pop()?; // NEWOBJ_EX keyword arguments: nothing known takes any
                    }
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let Item::Value(Value::Tuple(args), depth) = args else {
                        bail!(self, "REDUCE/NEWOBJ arguments must be a tuple");
                    };
                    self.call(callable, args, depth)?;
                }
                b'o' | b'i' => {
                    let callable = if op == b'i' {
                        let module = self.line()?.to_string();
                        let name = self.line()?.to_string();
                        Some(Item::Global(module, name))
                    } else {
                        None
                    };
                    let mut items = self.pop_mark()?;
                    let callable = match callable {
                        Some(c) => c,
                        None if items.is_empty() => bail!(self, "OBJ without a class"),
                        None => items.remove(0),
                    };
                    let depth = items.iter().map(Item::depth).max().unwrap_or(0) + 1;
                    let args = items.into_iter().map(Item::into_value).collect();
                    self.call(callable, args, depth)?;
                }
                b'b' => {
                    let state = self.pop()?;
                    let depth = state.depth() + 1;
                    if depth > MAX_DEPTH {
                        bail!(self, "containers nested deeper than {MAX_DEPTH}");
                    }
                    let top = self.top()?;
                    if let Item::Value(v, d) = &mut top.item {
                        *d = (*d).max(depth);
                        globals::build(v, state.into_value());
                    }
                }
                b'p' => {
                    let line = self.line()?;
                    match line.parse::<u32>() {
                        Ok(i) => self.memo_put(i)?,
                        Err(_) => bail!(self, "bad PUT index {line:?}"),
                    }
                }
                b'q' => {
                    let i = self.u8()? as u32;
                    self.memo_put(i)?;
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i = self.memo.len() as u32;
                    self.memo_put(i)?;
                }
                b'g' => {
                    let line = self.line()?;
                    match line.parse::<u32>() {
                        Ok(i) => self.memo_get(i)?,
                        Err(_) => bail!(self, "bad GET index {line:?}"),
                    }
                }
                b'h' => {
                    let i = self.u8()? as u32;
                    self.memo_get(i)?;
                }
                b'j' => {
                    let i = self.u32()?;
                    self.memo_get(i)?;
                }
                b'Q' | b'P' => {
                    let pid = if op == b'Q' {
                        self.pop_value()?
                    } else {
                        Value::Str(self.line()?.to_string())
                    };
                    let v = self.resolver.persistent(&pid)?.unwrap_or(Value::None);
                    self.push_value(v);
                }
                other => bail!(self, "unsupported opcode 0x{other:02x}"),
            }
        }
    }
}
