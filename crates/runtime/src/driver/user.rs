//! The user process-driver tasks run as.
//!
//! A worker started as root runs tasks as an unprivileged user (`nobody` unless
//! `CLOUDAI_TASK_USER` names another), so a command posted to the API is not root on the
//! machine. A worker started as anyone else runs tasks as itself: it cannot switch users.
//! The user is resolved once, at worker start, so a typo stops the worker there rather
//! than failing every task later.
//!
//! Each task gets a private working folder (its user's, mode 0700) inside a tasks folder
//! of mode 0711: tasks pass through it to their own folder but cannot list the others,
//! and cannot write anywhere in the worker's data folder but their own folder.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid, User};
use tracing::warn;

/// Who tasks run as when the worker runs as root and `CLOUDAI_TASK_USER` is not set.
pub const DEFAULT_TASK_USER: &str = "nobody";

/// Mode of a task's working folder: its user's alone.
const WORKDIR_MODE: u32 = 0o700;
/// Mode of the folder holding the working folders: entered, not listed, by tasks.
const TASKS_DIR_MODE: u32 = 0o711;

/// The user process-driver tasks run as, resolved from the system's user database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskUser {
    name: String,
    uid: u32,
    gid: u32,
    /// Their home folder when it exists and is theirs; otherwise (`nobody`'s is
    /// `/nonexistent`) a task's `HOME` is its working folder.
    home: Option<PathBuf>,
    /// Spawning switches to this user: the worker runs as root and this is someone else.
    switch: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TaskUserError {
    #[error("unknown CLOUDAI_TASK_USER {name:?}: there is no such user on this machine")]
    Unknown { name: String },
    #[error(
        "a worker running as root runs process tasks as \"nobody\", and this machine has no \
         such user; create it or set CLOUDAI_TASK_USER"
    )]
    NoDefaultUser,
    #[error("cannot look up CLOUDAI_TASK_USER {name:?} in the user database")]
    Lookup {
        name: String,
        #[source]
        source: nix::Error,
    },
    #[error(
        "CLOUDAI_TASK_USER={name} needs a worker running as root (this one runs as uid {current}); \
         unset it to run tasks as the worker's own user"
    )]
    NotPermitted { name: String, current: u32 },
    #[error(
        "process tasks run as {user} cannot reach their working folders in {tasks_dir}: {blocked} (mode \
         {mode:o}, owner uid {owner}) does not let them through; allow it (chmod o+x {blocked}) or use a \
         data folder they can reach"
    )]
    Unreachable { user: String, tasks_dir: PathBuf, blocked: PathBuf, mode: u32, owner: u32 },
    #[error("cannot prepare the tasks folder {dir}")]
    TasksDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl TaskUser {
    /// The user tasks of this worker run as; `requested` is `CLOUDAI_TASK_USER`.
    ///
    /// Unset: `nobody` for a root worker, the worker's own user otherwise. A worker that is
    /// not root may only name its own user. Naming root is allowed, with a warning.
    pub fn resolve(requested: Option<&str>) -> Result<Self, TaskUserError> {
        let current = Uid::effective();
        let name = match requested {
            Some(name) => name,
            None if current.is_root() => DEFAULT_TASK_USER,
            None => return Ok(Self::current()),
        };
        let user = User::from_name(name)
            .map_err(|source| TaskUserError::Lookup { name: name.to_owned(), source })?
            .ok_or_else(|| match requested {
                Some(_) => TaskUserError::Unknown { name: name.to_owned() },
                None => TaskUserError::NoDefaultUser,
            })?;
        if !current.is_root() && user.uid != current {
            return Err(TaskUserError::NotPermitted { name: name.to_owned(), current: current.as_raw() });
        }
        if !current.is_root() {
            return Ok(Self::current());
        }
        if user.uid.is_root() {
            warn!(user = name, "process tasks run as root: CLOUDAI_TASK_USER names the superuser");
        }
        Ok(Self::from_entry(user, true))
    }

    /// The worker's own user: tasks run as the worker does, with no switch.
    pub fn current() -> Self {
        let uid = Uid::effective();
        match User::from_uid(uid) {
            Ok(Some(user)) => Self { gid: Gid::effective().as_raw(), ..Self::from_entry(user, false) },
            // A uid with no entry (containers run with arbitrary ids): known by its number.
            _ => Self {
                name: uid.to_string(),
                uid: uid.as_raw(),
                gid: Gid::effective().as_raw(),
                home: None,
                switch: false,
            },
        }
    }

    fn from_entry(user: User, worker_is_root: bool) -> Self {
        let home = std::fs::metadata(&user.dir)
            .is_ok_and(|m| m.is_dir() && m.uid() == user.uid.as_raw())
            .then_some(user.dir);
        Self {
            switch: worker_is_root && !user.uid.is_root(),
            name: user.name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            home,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn uid(&self) -> u32 {
        self.uid
    }

    pub fn gid(&self) -> u32 {
        self.gid
    }

    /// The home folder tasks get as `HOME`, if the user has a usable one.
    pub fn home(&self) -> Option<&Path> {
        self.home.as_deref()
    }

    /// Whether tasks run as someone other than the worker.
    pub fn switches(&self) -> bool {
        self.switch
    }

    /// Creates `tasks_dir`, where working folders are made, with mode 0711, and checks that
    /// this user can pass through every folder above it to reach theirs. Checked by mode
    /// bits for the user and their primary group only (supplementary groups are dropped
    /// when tasks start); an ACL granting access is not seen.
    pub(crate) fn prepare_tasks_dir(&self, tasks_dir: &Path) -> Result<(), TaskUserError> {
        let io_error = |source| TaskUserError::TasksDir { dir: tasks_dir.to_owned(), source };
        std::fs::create_dir_all(tasks_dir).map_err(io_error)?;
        std::fs::set_permissions(tasks_dir, std::fs::Permissions::from_mode(TASKS_DIR_MODE))
            .map_err(io_error)?;
        if !self.switch {
            return Ok(());
        }
        let tasks_dir = tasks_dir.canonicalize().map_err(io_error)?;
        for dir in tasks_dir.ancestors() {
            let meta = std::fs::metadata(dir).map_err(io_error)?;
            if !self.may_enter(&meta) {
                return Err(TaskUserError::Unreachable {
                    user: self.name.clone(),
                    tasks_dir: tasks_dir.clone(),
                    blocked: dir.to_owned(),
                    mode: meta.mode() & 0o7777,
                    owner: meta.uid(),
                });
            }
        }
        Ok(())
    }

    fn may_enter(&self, meta: &std::fs::Metadata) -> bool {
        let mode = meta.mode();
        let bit = if meta.uid() == self.uid {
            0o100
        } else if meta.gid() == self.gid {
            0o010
        } else {
            0o001
        };
        mode & bit != 0
    }

    /// Makes a task's freshly created working folder this user's alone. The worker, as
    /// root, still reads and removes it.
    pub(crate) fn own_workdir(&self, dir: &Path) -> std::io::Result<()> {
        if self.switch {
            std::os::unix::fs::chown(dir, Some(self.uid), Some(self.gid))?;
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(WORKDIR_MODE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_user_is_named_in_the_error() {
        let error = TaskUser::resolve(Some("cloudai-no-such-user")).expect_err("unknown user");
        assert!(matches!(error, TaskUserError::Unknown { .. }), "{error:?}");
        let message = error.to_string();
        assert!(
            message.contains("CLOUDAI_TASK_USER") && message.contains("cloudai-no-such-user"),
            "{message}"
        );
    }

    #[test]
    fn unset_means_nobody_for_root_and_oneself_otherwise() {
        let user = TaskUser::resolve(None).expect("default user");
        if Uid::effective().is_root() {
            assert_eq!(user.name(), DEFAULT_TASK_USER);
            assert!(user.switches());
            assert_ne!(user.uid(), 0);
        } else {
            assert_eq!(user.uid(), Uid::effective().as_raw());
            assert!(!user.switches());
        }
    }

    #[test]
    fn naming_oneself_never_switches() {
        let me = TaskUser::current();
        let named = TaskUser::resolve(Some(me.name())).expect("own user");
        assert_eq!(named.uid(), me.uid());
        assert!(!named.switches() && !me.switches());
    }

    #[test]
    fn a_worker_that_is_not_root_cannot_name_another_user() {
        if Uid::effective().is_root() {
            return; // root may name anyone; covered by the tests that run tasks
        }
        let error = TaskUser::resolve(Some("root")).expect_err("not permitted");
        assert!(matches!(error, TaskUserError::NotPermitted { .. }), "{error:?}");
    }

    #[test]
    fn a_closed_folder_above_the_tasks_folder_is_refused() {
        if !Uid::effective().is_root() {
            eprintln!("skipped: only root runs tasks as another user");
            return;
        }
        let user = TaskUser::resolve(None).expect("nobody");
        let dir = tempfile::tempdir().expect("temp dir");
        // A folder only root may enter, like /root often is.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let error = user.prepare_tasks_dir(&dir.path().join("tasks")).expect_err("unreachable");
        let TaskUserError::Unreachable { blocked, mode, .. } = &error else { panic!("{error:?}") };
        assert_eq!(blocked, &dir.path().canonicalize().expect("canonical"));
        assert_eq!(*mode, 0o700);

        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
        user.prepare_tasks_dir(&dir.path().join("tasks")).expect("reachable once others may pass");
        let mode = std::fs::metadata(dir.path().join("tasks")).expect("tasks dir").mode();
        assert_eq!(mode & 0o7777, TASKS_DIR_MODE);
    }
}
